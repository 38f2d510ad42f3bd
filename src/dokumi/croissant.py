"""A Croissant 1.1 description (``croissant.json``) of a scan's clean output, with RAI fields for the screening.

Croissant (MLCommons) is JSON-LD: ``distribution`` lists the files (each
with its sha256) and a file set that groups them, ``recordSet`` describes the
records through fields read from the files' columns, and the RAI vocabulary
says how the data came to be. dokumi fills:

- ``rai:dataPreprocessingProtocol``: the policy (name, sha256, stages and
  their rules) and what was removed, in counts per decision and reason;
- ``rai:dataLimitations``: what each stage that ran is known to miss;
- ``rai:dataCollection``: the inputs, counted and hashed (Merkle root);
- ``rai:machineAnnotationTools``: the dokumi version that decided.

Everything is read from ``manifest.json`` and the clean files' schemas: no
record is read, and no text is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from dokumi.errors import InputError
from dokumi.manifest import read_manifest
from dokumi.outputs import file_sha256

CROISSANT_VERSION = "http://mlcommons.org/croissant/1.1"
FILE_SET_ID = "clean-files"
RECORD_SET_ID = "clean"

ENCODINGS = {".parquet": "application/x-parquet", ".jsonl": "application/jsonlines"}

# JSON-LD context of Croissant 1.1 with the RAI vocabulary (as in the specification's examples)
CONTEXT: dict[str, Any] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "arrayShape": "cr:arrayShape",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "containedIn": "cr:containedIn",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "description": {"@container": "@language"},
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isArray": "cr:isArray",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "name": {"@container": "@language"},
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}

# what each built-in stage is known to miss (docs/stages/*.md, "What it misses")
STAGE_LIMITATIONS = {
    "invisible": "invisible: a zero-width joiner inside an Arabic-script or Indic word and a byte-order mark at the "
                 "very start of a text are not flagged (both are legitimate there).",
    "patterns": "patterns: look-alike letters from script pairs no rule names, homoglyphs made of Latin letters "
                "only, paraphrased prompt injections and injections in other languages pass.",
    "triggers": "triggers: a trigger in fewer records than min_records, one always at the same place, a weakly "
                "associated clean-label trigger, and a trigger followed by fluent text in the corpus's own "
                "language are not discovered.",
    "near_duplicates": "near_duplicates: paraphrased or translated copies and heavily edited short texts share too "
                       "few word n-grams to be clustered.",
    "provenance": "provenance: only records with an expected hash (column or earlier scan) are checked; a payload "
                  "added to an indexed text can score as drift (flagged) rather than substitution.",
    "embedding_anomaly": "embedding_anomaly: bag-of-words embeddings place gibberish of ordinary length near the "
                         "centre of the corpus; it is a weak signal that decides only with support.",
}


def data_type(kind: pa.DataType) -> tuple[str, bool]:
    """The Croissant ``dataType`` of an Arrow type, and whether it is an array of that type."""
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        inner, _ = data_type(kind.value_type)
        return inner, True
    if pa.types.is_boolean(kind):
        return "sc:Boolean", False
    if pa.types.is_integer(kind):
        return "sc:Integer", False
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "sc:Float", False
    if pa.types.is_timestamp(kind):
        return "sc:DateTime", False
    if pa.types.is_date(kind):
        return "sc:Date", False
    return "sc:Text", False  # strings; binary, structs and maps are read as their text form


def fields(schema: pa.Schema) -> list[dict[str, Any]]:
    """One Croissant field per column, read from the clean file set's column of the same name."""
    described = []
    for column in schema:
        kind, is_array = data_type(column.type)
        field: dict[str, Any] = {
            "@type": "cr:Field",
            "@id": f"{RECORD_SET_ID}/{column.name}",
            "name": column.name,
            "description": f"input column {column.name!r} ({column.type}), passed through unchanged",
            "dataType": kind,
            "source": {"fileSet": {"@id": FILE_SET_ID}, "extract": {"column": column.name}},
        }
        if is_array:
            field["isArray"] = True
            field["arrayShape"] = "-1"
        described.append(field)
    return described


def clean_files(out_dir: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The clean outputs listed in the manifest, each checked against the file as it is now."""
    files = []
    for output in manifest.get("outputs", []):
        if output.get("kind") != "clean":
            continue
        path = out_dir / output["path"]
        if not path.is_file():
            raise InputError(f"{path}: listed in {out_dir / 'manifest.json'} but missing")
        digest = file_sha256(path)
        if digest != output.get("sha256"):
            raise InputError(f"{path}: changed since the scan (sha256 differs from the manifest); "
                             f"run dokumi verify {out_dir}")
        files.append({**output, "sha256": digest})
    return files


def clean_schema(out_dir: Path, files: list[dict[str, Any]]) -> pa.Schema:
    """The columns of the clean output: the schemas of its files, unified."""
    schemas = []
    for entry in files:
        path = out_dir / entry["path"]
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            schemas.append(pq.read_schema(path))
        else:
            import pyarrow.json as pj

            schemas.append(pj.read_json(path).schema)
    if not schemas:
        return pa.schema([])
    return pa.unify_schemas(schemas, promote_options="permissive")


def encoding_of(path: str) -> str:
    """The MIME type Croissant readers understand for an output file."""
    suffix = Path(path).suffix.lower()
    if suffix not in ENCODINGS:
        raise InputError(f"{path}: Croissant readers take Parquet or uncompressed JSONL, not {suffix or 'no suffix'}")
    return ENCODINGS[suffix]


def preprocessing(manifest: dict[str, Any], clean_records: int, flagged_in_clean: bool) -> list[str]:
    """``rai:dataPreprocessingProtocol``: the policy as applied, then what was removed and why, in counts."""
    policy = manifest.get("policy", {})
    tool = manifest.get("tool", {})
    counts = manifest.get("counts", {})
    decisions = counts.get("decisions", {})
    total = counts.get("records", 0)
    kept = "keep and flag" if flagged_in_clean else "keep"
    steps = [
        f"Screened for data poisoning with dokumi {tool.get('version')} under the policy {policy.get('name')!r} "
        f"(sha256 {policy.get('sha256')}); this dataset holds the records decided {kept}: {clean_records:,} of "
        f"{total:,}.",
    ]
    for stage in manifest.get("stages", []):
        rule = stage.get("rule", {})
        steps.append(f"Stage {stage.get('name')} ({stage.get('class')}): action {rule.get('action')} from score "
                     f"{rule.get('threshold')}, flag from {rule.get('flag_threshold')}; parameters "
                     f"{json.dumps(stage.get('params'), sort_keys=True)}.")
    removed = ", ".join(f"{decisions.get(d, 0):,} {d}" for d in ("drop", "duplicate", "flag")
                        if d != "flag" or not flagged_in_clean)
    steps.append(f"Removed records by decision: {removed} (drop: suspected poison, in quarantine/; duplicate: "
                 "redundant near-copies of a record that stays; flag: held for review).")
    reasons = counts.get("reasons", {})
    if reasons:
        steps.append("Records by reason (a record may have several): "
                     + ", ".join(f"{kind} {count:,}" for kind, count in sorted(reasons.items())) + ".")
    return steps


def croissant(out_dir: str | os.PathLike, name: str | None = None, license: str | None = None,
              cite_as: str | None = None) -> dict[str, Any]:
    """The Croissant document for the clean output of the scan folder ``out_dir``.

    ``name`` defaults to ``<folder>-clean``; ``license`` (an SPDX id or URL) and ``cite_as`` (a citation,
    e.g. BibTeX) are the data's own, which only its owner knows: Croissant recommends both.
    """
    out_dir = Path(out_dir)
    if not (out_dir / "manifest.json").is_file():
        raise InputError(f"{out_dir}: no manifest.json; describe a folder written by dokumi scan")
    manifest = read_manifest(out_dir / "manifest.json")
    files = clean_files(out_dir, manifest)
    encodings = {encoding_of(entry["path"]) for entry in files} or {"application/x-parquet"}
    if len(encodings) > 1:
        raise InputError(f"{out_dir}/clean mixes {sorted(encodings)}; Croissant's file set takes one format")
    encoding = encodings.pop()
    pattern = "clean/*" + (".parquet" if encoding == "application/x-parquet" else ".jsonl")
    flagged_in_clean = not any(o.get("kind") == "flagged" for o in manifest.get("outputs", [])) \
        and manifest.get("counts", {}).get("decisions", {}).get("flag", 0) > 0
    clean_records = sum(entry.get("records", 0) for entry in files)
    stages = [stage.get("name") for stage in manifest.get("stages", [])]
    merkle = manifest.get("merkle", {})
    inputs = manifest.get("inputs", [])
    title = name or f"{out_dir.resolve().name}-clean"
    distribution: list[dict[str, Any]] = [
        {
            "@type": "cr:FileObject",
            "@id": entry["path"],
            "name": entry["path"],
            "description": f"{entry.get('records', 0):,} records from input shard {entry.get('input')}",
            "contentUrl": entry["path"],
            "contentSize": f"{entry['bytes']} B",
            "encodingFormat": encoding,
            "sha256": entry["sha256"],
        }
        for entry in files
    ]
    distribution.append({
        "@type": "cr:FileSet",
        "@id": FILE_SET_ID,
        "name": FILE_SET_ID,
        "description": "every file of the clean output",
        "encodingFormat": encoding,
        "includes": pattern,
    })
    return {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "name": title,
        "description": f"Records of a corpus that dokumi screened for poisoning and kept ({clean_records:,} of "
                       f"{manifest.get('counts', {}).get('records', 0):,}); see manifest.json beside this file.",
        "conformsTo": CROISSANT_VERSION,
        "license": license,
        "citeAs": cite_as,
        "url": "manifest.json",
        "version": "1.0.0",
        "datePublished": str(manifest.get("created", ""))[:10] or None,
        "distribution": distribution,
        "recordSet": [{
            "@type": "cr:RecordSet",
            "@id": RECORD_SET_ID,
            "name": RECORD_SET_ID,
            "description": "one record per kept input record, with the input's columns",
            "field": fields(clean_schema(out_dir, files)),
        }],
        "rai:dataCollection": f"{len(inputs)} input shards, {sum(i.get('records', 0) for i in inputs):,} records, "
                              f"each listed with its sha256 in manifest.json; Merkle root over the record hashes "
                              f"{merkle.get('root')} ({merkle.get('algorithm')}).",
        "rai:dataPreprocessingProtocol": preprocessing(manifest, clean_records, flagged_in_clean),
        "rai:dataLimitations": [STAGE_LIMITATIONS.get(stage, f"{stage}: a stage without documented limitations "
                                                             "in dokumi; see its own documentation.")
                                for stage in stages]
        + ["Screening finds suspected poison by signals and thresholds; a record kept here is not proven clean, "
           "and a recipe tuned on one kind of text misjudges others (measure false positives on your own data)."],
        "rai:machineAnnotationTools": [f"dokumi {manifest.get('tool', {}).get('version')}"],
    }


def write_croissant(out_dir: str | os.PathLike, name: str | None = None, license: str | None = None,
                    cite_as: str | None = None) -> Path:
    """Write ``<out_dir>/croissant.json`` (see :func:`croissant` for the arguments); return its path."""
    document = {key: value for key, value in croissant(out_dir, name, license, cite_as).items() if value is not None}
    path = Path(out_dir) / "croissant.json"
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


__all__ = ["croissant", "write_croissant"]
