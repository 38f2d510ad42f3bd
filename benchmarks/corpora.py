"""Real clean text for benchmarks: glosses, fortunes, conversation pairs, man pages, changelogs, READMEs, code.

Looks for prepared Parquet files (``wordnet_glosses.parquet``, ``fortunes.parquet``,
``chatterbot_pairs.parquet``, ``manpages_en.parquet``, ...: see ``FILES``) in the
folder named by ``--data`` or the ``DOKUMI_DATA`` environment variable. The first
three are otherwise built once into ``benchmarks/.cache/`` from the Debian packages
``wordnet-base`` and ``fortunes`` (``apt-get download``) and the PyPI package
``chatterbot-corpus`` (``pip download``); the others have no builder here and must
be prepared beforehand (their build needs root, npm and man-db, and downloads
about 1.5 GB), so loading one without the prepared folder raises an error saying so.

``split_halves`` cuts a corpus into a tuning half and a report half by a hash of
each row's content, so numbers reported on one half were not tuned on it.
"""

from __future__ import annotations

import glob
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CACHE = Path(__file__).parent / ".cache"
FILES = {
    "wordnet": "wordnet_glosses.parquet",
    "fortunes": "fortunes.parquet",
    "chatterbot": "chatterbot_pairs.parquet",
    # No builder for these: prepare them elsewhere and pass --data or DOKUMI_DATA.
    "manpages": "manpages_en.parquet",  # text (one section, <= 3,000 chars), label (man section 1-8), page, ...
    "debian_descriptions": "debian_descriptions.parquet",  # text, label (Debian section), package
    "changelogs": "debian_changelogs.parquet",  # text (one version entry), package, version
    "copyright": "copyright_files.parquet",  # text (one debian/copyright stanza), package, format, stanza
    "npm_readmes": "npm_readmes.parquet",  # text (Markdown), package, kind (section | whole)
    "source_code": "source_code.parquet",  # text (top-level blocks), lang (c, javascript, go, rust), file
    "cjk_mixed": "cjk_mixed.parquet",  # text (Japanese, Chinese or Korean with Latin), lang, source, ...
}


def data_dir(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get("DOKUMI_DATA") or CACHE)


def load_corpus(name: str, data: str | None = None) -> pa.Table:
    """The corpus ``name`` (a key of ``FILES``: wordnet, fortunes, chatterbot, manpages, ...) as an Arrow table."""
    if name not in FILES:
        raise KeyError(f"unknown corpus {name!r}; known: {', '.join(FILES)}")
    folder = data_dir(data)
    path = folder / FILES[name]
    if not path.exists():
        path = CACHE / FILES[name]
        if not path.exists():
            if name not in BUILDERS:
                raise FileNotFoundError(
                    f"corpus {name!r} ({FILES[name]}) not found in {folder} and it has no builder here: "
                    "pass --data or set DOKUMI_DATA to the folder of the prepared corpora")
            CACHE.mkdir(parents=True, exist_ok=True)
            BUILDERS[name](path)
    return pq.read_table(path)


def _row_keys(table: pa.Table, column: str) -> list[bytes]:
    """The content each row is hashed by: ``column``, or prompt and response for pair data without it."""
    if column in table.column_names:
        return [(text or "").encode("utf-8") for text in table.column(column).to_pylist()]
    if {"prompt", "response"} <= set(table.column_names):
        # Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        return [f"{len(p or '')}:{p or ''}{r or ''}".encode() for p, r in
                zip(table.column("prompt").to_pylist(), table.column("response").to_pylist())]
    raise KeyError(f"no column {column!r} (nor prompt and response) in {table.column_names}")


def split_halves(table: pa.Table, column: str = "text", seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """``(tuning, report)``: the rows of ``table`` split in two by a salted SHA-256 of their content.

    A row's half depends only on its content (``column``, or ``prompt`` and
    ``response`` for pair data) and ``seed``, never on its position: the same
    text is always in the same half for a given seed, whatever table it sits
    in, and identical rows never straddle the halves. Each half holds about
    half of the distinct contents.
    """
    salt = f"dokumi-split:{seed}:".encode()
    report = np.fromiter((hashlib.sha256(salt + key).digest()[0] & 1 for key in _row_keys(table, column)),
                         dtype=bool, count=table.num_rows)
    return table.filter(pa.array(~report)), table.filter(pa.array(report))


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
