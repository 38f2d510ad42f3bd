"""Real clean text for benchmarks: WordNet glosses, fortunes, chatterbot conversation pairs.

Looks for prepared Parquet files (``wordnet_glosses.parquet``, ``fortunes.parquet``,
``chatterbot_pairs.parquet``) in the folder named by ``--data`` or the
``DOKUMI_DATA`` environment variable; otherwise builds them once into
``benchmarks/.cache/`` from the Debian packages ``wordnet-base`` and ``fortunes``
(``apt-get download``) and the PyPI package ``chatterbot-corpus`` (``pip download``).
"""

from __future__ import annotations

import glob
import os
import subprocess
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

CACHE = Path(__file__).parent / ".cache"
FILES = {
    "wordnet": "wordnet_glosses.parquet",
    "fortunes": "fortunes.parquet",
    "chatterbot": "chatterbot_pairs.parquet",
}


def data_dir(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get("DOKUMI_DATA") or CACHE)


def load_corpus(name: str, data: str | None = None) -> pa.Table:
    """The corpus ``name`` (wordnet | fortunes | chatterbot) as an Arrow table."""
    folder = data_dir(data)
    path = folder / FILES[name]
    if not path.exists():
        path = CACHE / FILES[name]
        if not path.exists():
            CACHE.mkdir(parents=True, exist_ok=True)
            BUILDERS[name](path)
    return pq.read_table(path)


def _deb(package: str, workdir: str) -> str:
    subprocess.run(f"apt-get download {package} && dpkg -x {package}_*.deb {package}", shell=True, cwd=workdir,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return os.path.join(workdir, package)


def _build_wordnet(path: Path) -> None:
    root = _deb("wordnet-base", tempfile.mkdtemp())
    texts, labels, pos = [], [], []
    for part in ("noun", "verb", "adj", "adv"):
        for line in open(f"{root}/usr/share/wordnet/data.{part}", encoding="latin-1"):
            if line.startswith("  ") or " | " not in line:
                continue
            texts.append(line.split(" | ", 1)[1].strip())
            labels.append(int(line.split(" ")[1]))
            pos.append(part)
    pq.write_table(pa.table({"text": texts, "label": labels, "pos": pos}), path)


def _build_fortunes(path: Path) -> None:
    root = _deb("fortunes", tempfile.mkdtemp())
    folder = f"{root}/usr/share/games/fortunes"
    texts, labels = [], []
    for name in sorted(os.listdir(folder)):
        file = os.path.join(folder, name)
        if name.endswith((".dat", ".u8")) or os.path.islink(file) or not os.path.isfile(file):
            continue
        for chunk in open(file, encoding="utf-8", errors="replace").read().split("\n%\n"):
            chunk = chunk.strip("%\n ")
            if chunk:
                texts.append(chunk)
                labels.append(name)
    pq.write_table(pa.table({"text": texts, "label": labels}), path)


def _build_chatterbot(path: Path) -> None:
    import yaml

    workdir = tempfile.mkdtemp()
    command = f"pip download -q --no-deps chatterbot-corpus==1.3.3 -d {workdir} && cd {workdir} && unzip -q -o *.whl"
    subprocess.run(command, shell=True, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    prompts, responses, languages = [], [], []
    for file in sorted(glob.glob(f"{workdir}/chatterbot_corpus/data/*/*.yml")):
        language = file.split("/")[-2]
        try:
            data = yaml.safe_load(open(file, encoding="utf-8")) or {}
        except yaml.YAMLError:
            continue
        for conversation in data.get("conversations") or []:
            for prompt, response in zip(conversation, conversation[1:]):
                prompts.append(str(prompt))
                responses.append(str(response))
                languages.append(language)
    pq.write_table(pa.table({"prompt": prompts, "response": responses, "language": languages}), path)


BUILDERS = {"wordnet": _build_wordnet, "fortunes": _build_fortunes, "chatterbot": _build_chatterbot}
