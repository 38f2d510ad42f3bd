import sys

from dokumi.cli import main

sys.exit(main())
