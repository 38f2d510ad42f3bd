"""dokumi (毒味, "tasting for poison"): screen LLM training data for poisoning.

The public API::

    from dokumi import Pipeline, scan
    from dokumi.stages import InvisibleCharacters

    pipeline = Pipeline([InvisibleCharacters()])
    for scores in pipeline.score(records):   # one pyarrow RecordBatch per input batch
        ...
    scan("shards/*.parquet", out="scan/", policy="pretraining")
"""

from importlib.metadata import PackageNotFoundError, version

from dokumi.errors import DokumiError, InputError, PolicyError
from dokumi.pipeline import Pipeline
from dokumi.policy import Policy, load_policy
from dokumi.records import Batch, Columns
from dokumi.scan import ScanResult, scan
from dokumi.stage import Stage, StageResult

try:
    __version__ = version("dokumi")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "Batch",
    "Columns",
    "DokumiError",
    "InputError",
    "Pipeline",
    "Policy",
    "PolicyError",
    "ScanResult",
    "Stage",
    "StageResult",
    "__version__",
    "load_policy",
    "scan",
]
