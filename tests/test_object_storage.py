"""Object storage: scans read from and write to a real S3 API (moto's server on loopback) and memory://."""

from __future__ import annotations

import hashlib
import io
import json
import socket
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import PLUMBING, write_jsonl

from dokumi import scan
from dokumi.cli import main
from dokumi.errors import InputError

pytest.importorskip("s3fs", reason="the test extra installs s3fs")
pytest.importorskip("moto.server", reason="the test extra installs moto[server]")

CORPUS = Path(__file__).parent.parent / "examples" / "corpus"
ROWS_PER_FILE = 250


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """An S3 API server on 127.0.0.1 (moto), reached through the standard variables, AWS_ENDPOINT_URL included."""
    import logging

    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    patch = pytest.MonkeyPatch()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        patch.delenv(name, raising=False)
    patch.setenv("AWS_ACCESS_KEY_ID", "testing")
    patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    patch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.mkdir("bucket")
    yield fs
    s3fs.S3FileSystem.clear_instance_cache()
    patch.undo()
    server.stop()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A local folder of two Parquet files of several row groups each, and a JSONL file, from the example corpus."""
    folder = tmp_path_factory.mktemp("corpus") / "data"
    folder.mkdir()
    for name in ("part-0000.parquet", "part-0001.parquet"):
        table = pq.read_table(CORPUS / name).slice(0, ROWS_PER_FILE)
        pq.write_table(table, folder / name, row_group_size=100)
    extra = pq.read_table(CORPUS / "part-0001.parquet").slice(ROWS_PER_FILE, 120).to_pylist()
    extra[0]["text"] += " \u202eevil\u202c"  # a record the invisible-character stage flags
    write_jsonl(folder / "extra.jsonl", extra)
    return folder


def _decisions(scores: pa.Table) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {row["id"]: (row["decision"], tuple(row["reasons"])) for row in scores.select(
        ["id", "decision", "reasons"]).to_pylist()}


def _s3_table(fs, prefix: str) -> pa.Table:
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return pq.read_table(prefix, filesystem=PyFileSystem(FSSpecHandler(fs)))


def _listing(fs, prefix: str) -> dict[str, bytes]:
    return {path[len(prefix) + 1:]: fs.cat_file(path) for path in fs.find(prefix)}


def test_s3_scan_equals_local_scan_and_publishes_every_file_with_the_manifest(s3, corpus, tmp_path):
    for file in corpus.iterdir():
        s3.put_file(str(file), f"bucket/data/{file.name}")
    result = scan(["s3://bucket/data/*.parquet", "s3://bucket/data/extra.jsonl"], "s3://bucket/out",
                  progress=False, workers=1)
    local = scan([str(corpus / "part-0000.parquet"), str(corpus / "part-0001.parquet"), str(corpus / "extra.jsonl")],
                 tmp_path / "local", progress=False, workers=1)

    remote_decisions = _decisions(_s3_table(s3, "bucket/out/scores"))
    assert remote_decisions == _decisions(pq.read_table(tmp_path / "local" / "scores"))
    assert len(remote_decisions) == 2 * ROWS_PER_FILE + 120
    assert {decision for decision, _ in remote_decisions.values()} > {"keep"}  # something was caught
    assert result.manifest["counts"] == local.manifest["counts"]
    assert [i["name"] for i in result.manifest["inputs"]] == [i["name"] for i in local.manifest["inputs"]]
    assert result.manifest["merkle"]["root"] == local.manifest["merkle"]["root"]

    # every object is listed by the manifest with its sha256; nothing else is there (no staging prefix left)
    objects = _listing(s3, "bucket/out")
    manifest = json.loads(objects.pop("manifest.json"))
    listed = {e["path"]: e["sha256"] for key in ("outputs", "state", "files") for e in manifest[key]}
    assert listed == {path: hashlib.sha256(body).hexdigest() for path, body in objects.items()}
    assert "report.html" in listed
    # inputs are recorded by URL, with the hash of the object's bytes
    inputs = {entry["path"]: entry["sha256"] for entry in manifest["inputs"]}
    assert inputs == {f"s3://bucket/data/{f.name}": hashlib.sha256(f.read_bytes()).hexdigest()
                      for f in sorted(corpus.iterdir())}

    # the routed records read back with pandas straight from S3 (through s3fs), JSONL kept as JSONL
    import pandas as pd

    clean = pd.read_parquet("s3://bucket/out/clean/00000-part-0000.parquet")
    assert list(clean.columns) == ["id", "text", "source"]
    kept = {i for i, (decision, _) in remote_decisions.items() if decision == "keep"}
    assert set(clean["id"]) <= kept and len(clean) > 0
    planted = json.loads((corpus / "extra.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert remote_decisions[planted["id"]][0] in ("flag", "drop")
    routed = [json.loads(line) for path, body in objects.items()
              if path.endswith("-extra.jsonl") and not path.startswith("clean/") for line in body.splitlines()]
    assert planted["text"] in [record["text"] for record in routed if record["id"] == planted["id"]]
    assert result.out == "s3://bucket/out"
    assert "outputs in s3://bucket/out/" in result.summary()


def test_s3_out_replaces_an_earlier_scan_but_never_foreign_objects(s3, corpus):
    s3.put_file(str(corpus / "part-0000.parquet"), "bucket/two/a/part-0000.parquet")
    s3.put_file(str(corpus / "part-0001.parquet"), "bucket/two/b/part-0001.parquet")
    # two scoring processes: each opens its shard's URL itself
    scan("s3://bucket/two", "s3://bucket/scan", policy=PLUMBING, progress=False, workers=2)
    first = set(_listing(s3, "bucket/scan"))
    assert any(p.startswith("clean/") and "part-0001" in p for p in first), sorted(first)

    with pytest.raises(InputError, match="is an object, not a folder"):
        scan("s3://bucket/two/a", "s3://bucket/two/b/part-0001.parquet", policy=PLUMBING, progress=False)
    with pytest.raises(InputError, match="is not empty; pass --overwrite"):
        scan("s3://bucket/two/a", "s3://bucket/scan", policy=PLUMBING, progress=False)
    # a smaller scan over the earlier one: the earlier outputs it does not write again are removed
    scan("s3://bucket/two/a", "s3://bucket/scan", policy=PLUMBING, progress=False, overwrite=True)
    second = _listing(s3, "bucket/scan")
    manifest = json.loads(second.pop("manifest.json"))
    assert set(second) == {e["path"] for key in ("outputs", "state", "files") for e in manifest[key]}
    assert not any("part-0001" in path for path in second)

    s3.pipe_file("bucket/scan/notes.txt", b"mine, not dokumi's")
    with pytest.raises(InputError, match="does not list.*notes.txt"):
        scan("s3://bucket/two/a", "s3://bucket/scan", policy=PLUMBING, progress=False, overwrite=True)
    s3.pipe_file("bucket/theirs/readme.md", b"a folder that is not a scan")
    with pytest.raises(InputError, match="no manifest.json: not a dokumi scan"):
        scan("s3://bucket/two/a", "s3://bucket/theirs", policy=PLUMBING, progress=False, overwrite=True)
    assert s3.cat_file("bucket/scan/notes.txt") == b"mine, not dokumi's"
    assert s3.cat_file("bucket/theirs/readme.md") == b"a folder that is not a scan"
    assert json.loads(s3.cat_file("bucket/scan/manifest.json")) == manifest  # the refused scans changed nothing


def test_a_publish_that_dies_part_way_leaves_an_unfinished_folder_the_next_overwrite_repairs(s3, corpus,
                                                                                             monkeypatch):
    s3.put_file(str(corpus / "part-0000.parquet"), "bucket/crash-in/a/part-0000.parquet")
    s3.put_file(str(corpus / "part-0001.parquet"), "bucket/crash-in/b/part-0001.parquet")
    scan("s3://bucket/crash-in", "s3://bucket/crash", policy=PLUMBING, progress=False)
    copies = []
    real_copy = s3.copy

    def copy_then_fail(source, target, **kwargs):  # the store fails on the third copy into place
        copies.append(target)
        if len(copies) == 3:
            raise ConnectionError("connection reset by peer")
        return real_copy(source, target, **kwargs)

    monkeypatch.setattr(s3, "copy", copy_then_fail)
    with pytest.raises(InputError, match="connection reset.*unfinished .no manifest.json.; pass --overwrite"):
        scan("s3://bucket/crash-in/a", "s3://bucket/crash", policy=PLUMBING, progress=False, overwrite=True)
    monkeypatch.undo()
    left = set(_listing(s3, "bucket/crash"))
    assert "manifest.json" not in left  # unfinished, by the rule readers follow
    assert any(p.startswith(".dokumi-staging-") and p.endswith("/replacing.json") for p in left)
    assert any("part-0001" in p and not p.startswith(".") for p in left)  # an earlier file not yet removed

    scan("s3://bucket/crash-in/a", "s3://bucket/crash", policy=PLUMBING, progress=False, overwrite=True)
    objects = _listing(s3, "bucket/crash")
    manifest = json.loads(objects.pop("manifest.json"))
    assert set(objects) == {e["path"] for key in ("outputs", "state", "files") for e in manifest[key]}
    assert [entry["path"] for entry in manifest["inputs"]] == ["s3://bucket/crash-in/a/part-0000.parquet"]


def test_s3_prefix_lists_data_objects_and_names_what_it_skips(s3, corpus, capsys):
    s3.put_file(str(corpus / "extra.jsonl"), "bucket/mixed/docs/extra.jsonl")
    s3.pipe_file("bucket/mixed/README.txt", b"about the data")
    s3.pipe_file("bucket/mixed/.hidden/x.parquet", b"not read")
    code = main(["scan", "s3://bucket/mixed/", "--out", "s3://bucket/mixed-out", "--policy", str(PLUMBING),
                 "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "skipped 2 entries; not Parquet, JSONL or CSV: README.txt; hidden: .hidden/x.parquet" in printed
    scores = _s3_table(s3, "bucket/mixed-out/scores")
    assert scores.num_rows == 120

    code = main(["scan", "s3://bucket/mixed/nope.parquet", "--out", "s3://bucket/x", "--no-progress"])
    error = capsys.readouterr().err
    assert code != 0 and "input 's3://bucket/mixed/nope.parquet' does not exist" in error
    assert "Traceback" not in error and len(error.strip().splitlines()) == 1
    code = main(["scan", "s3://bucket/mixed/*.parquet", "--out", "s3://bucket/x", "--no-progress"])
    assert code != 0 and "no object matches" in capsys.readouterr().err


def test_inputs_inside_a_remote_out_are_refused(s3, corpus):
    s3.put_file(str(corpus / "extra.jsonl"), "bucket/self-in/extra.jsonl")
    scan("s3://bucket/self-in", "s3://bucket/self", policy=PLUMBING, progress=False)
    before = s3.cat_file("bucket/self/manifest.json")
    with pytest.raises(InputError, match="lies inside --out s3://bucket/self"):
        scan("s3://bucket/self/clean", "s3://bucket/self", policy=PLUMBING, progress=False, overwrite=True)
    assert s3.cat_file("bucket/self/manifest.json") == before


def test_memory_round_trip_equals_a_local_scan(corpus, tmp_path):
    import fsspec

    memory = fsspec.filesystem("memory")
    for file in corpus.iterdir():
        memory.pipe_file(f"/dokumi-test/in/{file.name}", file.read_bytes())
    try:
        result = scan("memory://dokumi-test/in", "memory://dokumi-test/out", progress=False, workers=2)
        local = scan(str(corpus), tmp_path / "local", progress=False)
        scores = pq.read_table(memory.open("/dokumi-test/out/scores/00000-extra.parquet"))
        assert scores.num_rows == 120
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        remote_scores = pq.read_table("/dokumi-test/out/scores", filesystem=PyFileSystem(FSSpecHandler(memory)))
        assert _decisions(remote_scores) == _decisions(pq.read_table(tmp_path / "local" / "scores"))
        assert result.manifest["merkle"]["root"] == local.manifest["merkle"]["root"]
        manifest = json.loads(memory.cat_file("/dokumi-test/out/manifest.json"))
        assert manifest["inputs"][0]["path"] == "memory:///dokumi-test/in/extra.jsonl"
    finally:
        memory.rm("/dokumi-test", recursive=True)


def test_file_urls_are_local_paths(corpus, tmp_path):
    result = scan(corpus.as_uri(), (tmp_path / "out").as_uri(), policy=PLUMBING, progress=False)
    assert (tmp_path / "out" / "manifest.json").is_file()
    assert result.manifest["counts"]["records"] == 2 * ROWS_PER_FILE + 120


def test_an_unknown_protocol_is_a_one_line_error(capsys):
    code = main(["scan", "nosuchstore://bucket/x.parquet", "--out", "unused", "--no-progress"])
    error = capsys.readouterr().err
    assert code != 0 and "nosuchstore://bucket/x.parquet" in error and "Traceback" not in error


def test_verify_of_a_downloaded_remote_scan_asks_for_the_inputs_folder(s3, corpus, tmp_path, capsys):
    from dokumi.verify import verify

    s3.put_file(str(corpus / "extra.jsonl"), "bucket/v/in/extra.jsonl")
    scan("s3://bucket/v/in", "s3://bucket/v/out", policy=PLUMBING, progress=False)
    assert main(["verify", "s3://bucket/v/out"]) != 0
    error = capsys.readouterr().err
    assert "verify reads a local copy of the scan folder" in error and "Traceback" not in error
    s3.get("bucket/v/out", str(tmp_path / "copy"), recursive=True)
    report = verify(tmp_path / "copy" / "manifest.json")
    assert report.ok and report.files == 5 and report.records == 0, report.text()
    assert "input extra.jsonl is in object storage (s3://bucket/v/in/extra.jsonl): not re-read" in report.text()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "extra.jsonl").write_bytes((corpus / "extra.jsonl").read_bytes())
    report = verify(tmp_path / "copy" / "manifest.json", data=tmp_path / "data")
    assert report.ok and report.records == 120, report.text()
    kept = tmp_path / "copy" / "clean" / "00000-extra.jsonl"
    assert kept.is_file()
    kept.write_text("{}\n")
    assert not verify(tmp_path / "copy" / "manifest.json").ok


class _CountingFile(io.BytesIO):
    """A memory object that counts the bytes read from it."""

    read_bytes = 0

    def read(self, size=-1):
        data = super().read(size)
        _CountingFile.read_bytes += len(data)
        return data


def test_objects_are_streamed_not_downloaded(tmp_path):
    """Opening a shard reads a Parquet footer or the first lines of JSONL, not the whole object."""
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    from dokumi.records import Columns
    from dokumi.sources import open_inputs

    class CountingMemory(MemoryFileSystem):
        protocol = "dokumicounting"
        store: dict = {}
        pseudo_dirs = [""]

        @classmethod
        def _strip_protocol(cls, path):
            return super()._strip_protocol(path.removeprefix("dokumicounting://"))

        def _open(self, path, mode="rb", **kwargs):
            if "r" not in mode:
                return super()._open(path, mode, **kwargs)
            return _CountingFile(self.cat_file(path))

    fsspec.register_implementation("dokumicounting", CountingMemory, clobber=True)
    fs = CountingMemory()
    rows = [{"id": f"r{i}", "text": f"record {i} " + "x" * 1000} for i in range(6000)]
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink, row_group_size=1000, compression="none")
    fs.pipe_file("/s/big.parquet", sink.getvalue())
    fs.pipe_file("/s/big.jsonl", b"".join(json.dumps(r).encode() + b"\n" for r in rows))
    parquet, jsonl = open_inputs(["dokumicounting:///s/big.parquet", "dokumicounting:///s/big.jsonl"])
    size = len(sink.getvalue())

    _CountingFile.read_bytes = 0
    assert parquet.num_rows() == 6000 and parquet.schema_names() == ["id", "text"]
    assert _CountingFile.read_bytes < size / 20  # the footer
    first = next(parquet.batches(Columns(), 500))
    assert first.num_rows == 500 and _CountingFile.read_bytes < size / 3  # one row group, not the file
    _CountingFile.read_bytes = 0
    assert jsonl.schema_names() == ["id", "text"]
    assert _CountingFile.read_bytes <= 2 << 20 < size  # the first chunk of a 6 MB object
    assert sum(batch.num_rows for batch in jsonl.batches(Columns(), 1000)) == 6000


def test_a_signed_scan_publishes_its_signature_and_verifies_from_a_copy(corpus, tmp_path):
    import fsspec

    pytest.importorskip("pqcrypto", reason="the test extra installs dokumi[sign]")
    from dokumi.signing import write_keys
    from dokumi.verify import verify

    secret, public = write_keys(tmp_path / "keys" / "k")
    memory = fsspec.filesystem("memory")
    memory.pipe_file("/dokumi-signed/in/extra.jsonl", (corpus / "extra.jsonl").read_bytes())
    try:
        scan("memory://dokumi-signed/in", "memory://dokumi-signed/out", policy=PLUMBING, progress=False,
             sign_key=secret)
        assert memory.isfile("/dokumi-signed/out/manifest.json.sig")
        memory.get("/dokumi-signed/out", str(tmp_path / "copy"), recursive=True)
    finally:
        memory.rm("/dokumi-signed", recursive=True)
    report = verify(tmp_path / "copy", key=public, require_signature=True)
    assert report.ok and report.signed, report.text()


def test_compressed_csv_and_jsonl_objects_read_as_their_local_files(tmp_path):
    import gzip

    import fsspec

    from dokumi.records import Columns
    from dokumi.sources import open_inputs

    (tmp_path / "t.csv.gz").write_bytes(gzip.compress(b'id,text\n1,"a, quoted\nline"\n2,caf\xc3\xa9\n3,007\n'))
    (tmp_path / "t.jsonl.gz").write_bytes(gzip.compress(b'{"id": "j1", "text": "x"}\nnot json\n'))
    memory = fsspec.filesystem("memory")
    for name in ("t.csv.gz", "t.jsonl.gz"):
        memory.pipe_file(f"/dokumi-csv/{name}", (tmp_path / name).read_bytes())
    try:
        for name in ("t.csv.gz", "t.jsonl.gz"):
            [remote_shard] = open_inputs(f"memory://dokumi-csv/{name}")
            [local_shard] = open_inputs(str(tmp_path / name))
            remote_batches = list(remote_shard.batches(Columns(), 10))
            local_batches = list(local_shard.batches(Columns(), 10))
            assert [b.records.to_pylist() for b in remote_batches] == [b.records.to_pylist() for b in local_batches]
            assert [[u.reason for u in b.unreadable] for b in remote_batches] == \
                [[u.reason for u in b.unreadable] for b in local_batches]
        assert local_batches[0].unreadable  # the JSONL's second line is quarantined, in both
        [csv_shard] = open_inputs("memory://dokumi-csv/t.csv.gz")
        assert next(csv_shard.batches(Columns(), 10)).records.column("text").to_pylist() == \
            ["a, quoted\nline", "café", "007"]
    finally:
        memory.rm("/dokumi-csv", recursive=True)
