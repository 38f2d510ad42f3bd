"""Near-duplicate clusters: ordinary duplication, and poison injected by repetition.

Pass 1 computes a MinHash signature per record (:mod:`dokumi.minhash`), finds
candidate pairs by LSH banding and checks them, and clusters records into
connected components (:mod:`dokumi.lsh`). Pass 2 only looks up each record's
cluster, so the state sent to worker processes holds the clustered records alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dokumi.lsh import band_keys, band_parameters, cluster, cross_matches, estimated_jaccard, exact_jaccard
from dokumi.minhash import MinHasher
from dokumi.records import Batch, Columns
from dokumi.stage import Stage, StageResult

MODES = ("repetition", "dedup")
VERIFY = ("signature", "exact", "off")
STATE_FORMAT = "dokumi.near_duplicates.state/1"
_EMPTY = np.uint32(0xFFFFFFFF)
_REPRESENTATIVE = np.uint8(1)
_PROTECTED = np.uint8(2)


@dataclass
class _ShardMembers:
    """Clustered records of one shard: sorted rows, their cluster (-1: none) and flags."""

    rows: np.ndarray
    cluster: np.ndarray
    flags: np.ndarray


@dataclass
class _Index:
    """Signatures of every record with words (earlier scans first, then this corpus by shard and row)."""

    signatures: np.ndarray
    keys: np.ndarray
    generation: np.ndarray
    shard: list[str]
    row: np.ndarray
    cluster: list[str | None]


class NearDuplicates(Stage):
    """Score records by the near-duplicate cluster they belong to.

    Parameters
    ----------
    mode:
        ``"repetition"`` (default): every member of a large cluster is suspect, the
        first copy included, because repetition is how the poison works; the score
        grows with the cluster's size. ``"dedup"``: one representative per cluster
        (the first by shard name and row, or a record of an earlier scan) scores 0,
        every other member scores at least 0.5.
    jaccard:
        Word-shingle Jaccard similarity at which two records count as near-duplicates
        (default 0.3, loose enough to join copies with a few words inserted, deleted
        or swapped in a 25-word text; plain deduplication usually wants 0.7). It sets
        the LSH bands and rows (datasketch's ``optimal_param``) and the bar of the
        check; lower catches heavier edits and joins more texts that merely share
        phrases or a template.
    ngram:
        Words per shingle (default 5).
    num_perm, seed, scheme:
        Signature parameters, as in datasketch (defaults 128, 1, ``"affine32"``;
        ``"legacy"`` for datasketch before 2.0).
    verify:
        Check of LSH candidate pairs: ``"signature"`` (default; estimated Jaccard
        from the signatures), ``"exact"`` (Jaccard of the shingle sets; re-reads the
        records concerned; pairs with earlier-scan records use the estimate) or
        ``"off"`` (every band collision is a near-duplicate).
    min_cluster_size:
        Repetition mode: the cluster size at which members score 0.5 (default 50;
        templated but honest text, e.g. "the basic unit of money in <country>", forms
        clusters of tens). Scores rise towards 1 above it and fall towards 0 below.
    min_cluster_share:
        Repetition mode: a cluster holding this share of all records (default 0.01)
        scores 0.5 even when smaller than ``min_cluster_size``, so that small
        fine-tuning sets are screened too (never below 2 records).
    protect:
        Path to Parquet/JSONL files or a folder of them (evaluation sets, confidential
        documents): records near-duplicate to one score 1 with ``near-duplicate:protected``.
    index:
        ``state/near_duplicates/`` of an earlier scan (or that scan's output folder):
        its records join the clusters, so new shards are checked against the earlier
        corpus. The state this run saves includes them.
    """

    name = "near_duplicates"
    needs_fit = True

    def __init__(
        self,
        mode: str = "repetition",
        jaccard: float = 0.3,
        ngram: int = 5,
        num_perm: int = 128,
        seed: int = 1,
        scheme: str = "affine32",
        verify: str = "signature",
        min_cluster_size: int = 50,
        min_cluster_share: float = 0.01,
        protect: str | None = None,
        index: str | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode = {mode!r} is not one of {', '.join(MODES)}")
        if isinstance(jaccard, bool) or not isinstance(jaccard, (int, float)) or not 0 < jaccard < 1:
            raise ValueError(f"jaccard = {jaccard!r} must be a number between 0 and 1 (exclusive)")
        if verify not in VERIFY:
            raise ValueError(f"verify = {verify!r} is not one of {', '.join(VERIFY)}")
        if isinstance(min_cluster_size, bool) or not isinstance(min_cluster_size, int) or min_cluster_size < 2:
            raise ValueError(f"min_cluster_size = {min_cluster_size!r} must be an integer of at least 2")
        if (isinstance(min_cluster_share, bool) or not isinstance(min_cluster_share, (int, float))
                or not 0 < min_cluster_share <= 1):
            raise ValueError(f"min_cluster_share = {min_cluster_share!r} must be a number in (0, 1]")
        for name, path in (("protect", protect), ("index", index)):
            if path is not None and not Path(path).exists():
                raise ValueError(f"{name} = {str(path)!r} does not exist")
        self.mode = mode
        self.jaccard = float(jaccard)
        self.ngram = ngram
        self.num_perm = num_perm
        self.seed = seed
        self.scheme = scheme
        self.verify = verify
        self.min_cluster_size = min_cluster_size
        self.min_cluster_share = float(min_cluster_share)
        self.protect = None if protect is None else str(protect)
        self.index = None if index is None else str(index)
        self._hasher = MinHasher(num_perm=num_perm, seed=seed, ngram=ngram, scheme=scheme)

    # ---- pass 1 ---------------------------------------------------------------------------------

    def fit(self, batches: Iterable[Batch]) -> NearDuplicates:
        """Sign every record, cluster near-duplicates, and keep what scoring needs."""
        bands, rows = band_parameters(self.jaccard, self.num_perm)
        corpus = _sign_corpus(self._hasher, batches)
        earlier = _load_index(self.index, self._hasher.params(), bands, rows) if self.index else None
        n_earlier = len(earlier.row) if earlier else 0
        signatures = corpus.signatures  # records with words, by shard name and row
        keys = band_keys(signatures, bands, rows)
        if earlier:
            signatures = np.concatenate([earlier.signatures, signatures])
            keys = np.concatenate([earlier.keys, keys])
        n_nodes = len(signatures)
        rank = np.arange(n_nodes)  # nodes are already in stable order
        similar = self._similarity(signatures, n_earlier, corpus, batches, keys)
        labels = cluster(keys, rank, similar)
        sizes = np.bincount(labels, minlength=n_nodes)
        earlier_counts = np.bincount(labels[:n_earlier], minlength=n_nodes)

        generation = 1 + int(earlier.generation.max()) if earlier and len(earlier.generation) else 0
        node_shard = [corpus.shard_names[i] for i in corpus.shard_index.tolist()]
        node_generation = np.full(len(corpus.rows), generation, np.int32)
        if earlier:
            node_generation = np.concatenate([earlier.generation, node_generation])
        all_shards = (earlier.shard if earlier else []) + node_shard
        all_rows = np.concatenate([earlier.row, corpus.rows]) if earlier else corpus.rows

        clustered = np.flatnonzero(sizes[labels] > 1)
        cluster_of_label = {label: i for i, label in enumerate(np.unique(labels[clustered]).tolist())}
        self.cluster_ids_ = [
            _cluster_id(int(node_generation[label]), all_shards[label], int(all_rows[label]))
            for label in cluster_of_label
        ]
        self.cluster_sizes_ = np.array([sizes[label] for label in cluster_of_label], dtype=np.int64)
        self.cluster_earlier_ = np.array([earlier_counts[label] for label in cluster_of_label], dtype=np.int64)
        self.records_ = corpus.records
        self.indexed_ = n_earlier
        self.bands_, self.rows_ = bands, rows

        protected = self._protected_matches(signatures[n_earlier:], keys[n_earlier:], corpus.columns, bands, rows)
        self.protected_matches_ = int(len(protected))
        members = np.union1d(clustered[clustered >= n_earlier] - n_earlier, protected)
        nodes = members + n_earlier
        slot = np.array([cluster_of_label.get(label, -1) for label in labels[nodes].tolist()], dtype=np.int64)
        flags = np.where(labels[nodes] == nodes, _REPRESENTATIVE, np.uint8(0)).astype(np.uint8)
        flags[np.isin(members, protected)] |= _PROTECTED
        self.members_ = _group_by_shard(node_shard, corpus.rows, members, slot, flags)

        cluster_of_node: list[str | None] = [None] * n_nodes
        for node in clustered.tolist():
            cluster_of_node[node] = self.cluster_ids_[cluster_of_label[int(labels[node])]]
        self.lsh_index_ = _Index(signatures, keys, node_generation, all_shards, all_rows, cluster_of_node)
        return self

    def _similarity(self, signatures, n_earlier, corpus, batches, keys):
        if self.verify == "off":
            return None
        bar = self.jaccard
        if self.verify == "signature":
            return lambda left, right: estimated_jaccard(signatures, left, right) >= bar
        sets = _shingle_sets(self._hasher, batches, corpus, _colliding(keys[n_earlier:]))

        def similar(left: np.ndarray, right: np.ndarray) -> np.ndarray:
            estimate = estimated_jaccard(signatures, left, right) >= bar
            exact = [
                exact_jaccard(sets[a - n_earlier], sets[b - n_earlier]) >= bar if min(a, b) >= n_earlier else e
                for a, b, e in zip(left.tolist(), right.tolist(), estimate.tolist())
            ]
            return np.array(exact, dtype=bool)

        return similar

    def _protected_matches(self, signatures, keys, columns, bands, rows) -> np.ndarray:
        """Corpus nodes (indices among this corpus's records with words) near-duplicate to a protected record."""
        if self.protect is None:
            return np.zeros(0, dtype=np.int64)
        from dokumi.sources import open_inputs

        blocks = [
            self._hasher.signatures(_content(batch))
            for shard in open_inputs(self.protect)
            for batch in shard.batches(columns or Columns(), 1024)
            if batch.num_rows
        ]
        protected = np.concatenate(blocks) if blocks else np.zeros((0, self.num_perm), np.uint32)
        protected = protected[(protected != _EMPTY).any(axis=1)]
        similar = None
        if self.verify != "off":
            def similar(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
                return (signatures[query] == protected[reference]).mean(axis=1) >= self.jaccard
        matched, _ = cross_matches(keys, band_keys(protected, bands, rows), similar)
        return np.sort(matched)

    # ---- pass 2 ---------------------------------------------------------------------------------

    def score(self, batch: Batch) -> StageResult:
        n = batch.num_rows
        scores = np.zeros(n)
        reasons: list[list[str]] = [[] for _ in range(n)]
        members = self.members_.get(batch.shard)
        if members is None or not n:
            return StageResult(scores, reasons)
        rows = batch.rows.to_numpy()
        where = np.minimum(np.searchsorted(members.rows, rows), len(members.rows) - 1)
        for i in np.flatnonzero(members.rows[where] == rows).tolist():
            slot, flags = int(members.cluster[where[i]]), members.flags[where[i]]
            if slot >= 0:
                size = int(self.cluster_sizes_[slot])
                reason = f"near-duplicate:cluster={self.cluster_ids_[slot]},size={size}"
                if self.cluster_earlier_[slot]:
                    reason += f",earlier={int(self.cluster_earlier_[slot])}"
                reasons[i].append(reason)
                scores[i] = self._cluster_score(size, bool(flags & _REPRESENTATIVE))
            if flags & _PROTECTED:
                reasons[i].append("near-duplicate:protected")
                scores[i] = 1.0
        return StageResult(scores, reasons)

    def _cluster_score(self, size: int, representative: bool) -> float:
        if self.mode == "dedup":
            return 0.0 if representative else 1.0 - 0.5 / (size - 1)
        return repetition_score(size, self.boundary_size_)

    @property
    def boundary_size_(self) -> float:
        """Repetition mode: the cluster size that scores 0.5 in this corpus."""
        by_share = max(2.0, self.min_cluster_share * (self.records_ + self.indexed_))
        return min(float(self.min_cluster_size), by_share)

    # ---- reporting and state --------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        if not hasattr(self, "members_"):
            return {}
        order = np.argsort(-self.cluster_sizes_, kind="stable")
        largest = [
            {"cluster": self.cluster_ids_[i], "size": int(self.cluster_sizes_[i]),
             "earlier": int(self.cluster_earlier_[i])}
            for i in order[:10].tolist()
        ]
        boundary = self.boundary_size_ if self.mode == "repetition" else 2
        findings = [
            {"finding": f"near-duplicate cluster {c['cluster']}", "records": c["size"]}
            for c in largest if c["size"] >= boundary
        ]
        if self.protected_matches_:
            findings.insert(0, {"finding": "near-duplicate of a protected document",
                                "records": self.protected_matches_})
        return {
            "signature": self._hasher.params(),
            "lsh": {"jaccard": self.jaccard, "bands": self.bands_, "rows": self.rows_},
            "records": self.records_,
            "indexed": self.indexed_,
            "clusters": len(self.cluster_ids_),
            "records_in_clusters": int(self.cluster_sizes_.sum() - self.cluster_earlier_.sum()),
            "boundary_size": round(float(boundary), 3),
            "protected_matches": self.protected_matches_,
            "largest": largest,
            "findings": findings,
        }

    def save_state(self, directory: Path) -> list[Path]:
        """Write the signatures and LSH keys of every record seen (earlier index included) for ``index=``."""
        if not hasattr(self, "lsh_index_"):
            raise RuntimeError("save_state needs the process that ran fit(): copies sent to workers drop the index")
        index = self.lsh_index_
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = [directory / "signatures.npy", directory / "keys.npy", directory / "records.parquet",
                 directory / "params.json"]
        np.save(paths[0], index.signatures)
        np.save(paths[1], index.keys)
        table = pa.table({
            "generation": pa.array(index.generation, pa.int32()),
            "shard": pa.array(index.shard, pa.string()).dictionary_encode(),
            "row": pa.array(index.row, pa.int64()),
            "cluster": pa.array(index.cluster, pa.string()),
        })
        pq.write_table(table, paths[2])
        params = {"format": STATE_FORMAT, **self._hasher.params(), "bands": self.bands_, "rows": self.rows_,
                  "records": len(index.row)}
        paths[3].write_text(json.dumps(params, indent=2) + "\n", encoding="utf-8")
        return paths

    def __getstate__(self) -> dict[str, Any]:
        # Workers only score: the signature index stays in the process that fitted.
        return {k: v for k, v in self.__dict__.items() if k != "lsh_index_"}


def repetition_score(size: int, boundary: float) -> float:
    """0 for a lone record, 0.5 at ``boundary`` records, rising towards 1 with more copies.

    Linear in the number of extra copies below the boundary, ``1 - 0.5 * b / extra`` above it.
    """
    extra, boundary_extra = size - 1, boundary - 1
    if extra <= 0:
        return 0.0
    if extra < boundary_extra:
        return 0.5 * extra / boundary_extra
    return 1.0 - 0.5 * boundary_extra / extra


@dataclass
class _Corpus:
    """This corpus's records with words, by shard name and row: signatures, places, reading-order positions."""

    signatures: np.ndarray
    shard_index: np.ndarray
    rows: np.ndarray
    positions: np.ndarray
    shard_names: list[str]
    records: int
    columns: Columns | None


def _content(batch: Batch) -> pa.Array | list[str]:
    return batch.texts if batch.is_instruction or not batch.has("text") else batch.column("text")


def _sign_corpus(hasher: MinHasher, batches: Iterable[Batch]) -> _Corpus:
    """Sign every record; lay the signatures out by shard name and row in one copy.

    A shard's batches arrive together and in row order, so ordering the shards by
    name orders the records without sorting (or copying) the signatures again.
    """
    by_shard: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    columns = None
    position = 0
    for batch in batches:
        columns = columns or batch.columns
        if not batch.num_rows:
            continue
        signatures = hasher.signatures(_content(batch))
        has_words = np.flatnonzero((signatures != _EMPTY).any(axis=1))
        by_shard.setdefault(batch.shard, []).append(
            (signatures[has_words], batch.rows.to_numpy().astype(np.int64)[has_words], position + has_words))
        position += batch.num_rows
    names = sorted(by_shard)
    parts = [part for name in names for part in by_shard[name]]
    counts = [len(part[1]) for name in names for part in by_shard[name]]
    shard_index = np.repeat(np.repeat(np.arange(len(names), dtype=np.int32), [len(by_shard[n]) for n in names]), counts)
    return _Corpus(
        signatures=np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, hasher.num_perm), np.uint32),
        shard_index=shard_index,
        rows=np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, dtype=np.int64),
        positions=np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, dtype=np.int64),
        shard_names=names,
        records=position,
        columns=columns,
    )


def _colliding(keys: np.ndarray) -> np.ndarray:
    """Nodes that share a key with another node in some band."""
    found = np.zeros(len(keys), dtype=bool)
    for band in range(keys.shape[1]):
        order = np.argsort(keys[:, band], kind="stable")
        same = keys[order[1:], band] == keys[order[:-1], band]
        found[order[1:][same]] = True
        found[order[:-1][same]] = True
    return found


def _shingle_sets(hasher: MinHasher, batches: Iterable[Batch], corpus: _Corpus,
                  needed: np.ndarray) -> dict[int, np.ndarray]:
    """Re-read the corpus for the shingle sets of the corpus nodes ``needed`` (a mask over them)."""
    node_of_position = np.full(corpus.records, -1, dtype=np.int64)
    node_of_position[corpus.positions[needed]] = np.flatnonzero(needed)
    sets: dict[int, np.ndarray] = {}
    position = 0
    for batch in batches:
        if not batch.num_rows:
            continue
        nodes = node_of_position[position: position + batch.num_rows]
        position += batch.num_rows
        wanted = np.flatnonzero(nodes >= 0)
        if not len(wanted):
            continue
        hashes, offsets = hasher.shingle_hashes(_content(batch))
        for i in wanted.tolist():
            sets[int(nodes[i])] = np.unique(hashes[offsets[i]: offsets[i + 1]])
    return sets


def _load_index(path: str, params: dict[str, Any], bands: int, rows: int) -> _Index:
    folder = Path(path)
    if not (folder / "params.json").exists() and (folder / "state" / "near_duplicates").is_dir():
        folder = folder / "state" / "near_duplicates"
    try:
        saved = json.loads((folder / "params.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"index = {path!r}: not a near_duplicates state folder ({error})") from None
    if saved.get("format") != STATE_FORMAT:
        raise ValueError(f"index = {path!r}: format {saved.get('format')!r}, expected {STATE_FORMAT!r}")
    for key, value in params.items():
        if saved.get(key) != value:
            raise ValueError(f"index = {path!r} was built with {key}={saved.get(key)!r}; this stage uses {value!r}")
    signatures = np.load(folder / "signatures.npy")
    keys = np.load(folder / "keys.npy")
    if (saved.get("bands"), saved.get("rows")) != (bands, rows):
        keys = band_keys(signatures, bands, rows)
    table = pq.read_table(folder / "records.parquet")
    return _Index(
        signatures=signatures,
        keys=keys,
        generation=table.column("generation").to_numpy().astype(np.int32),
        shard=[str(s) for s in table.column("shard").to_pylist()],
        row=table.column("row").to_numpy().astype(np.int64),
        cluster=table.column("cluster").to_pylist(),
    )


def _cluster_id(generation: int, shard: str, row: int) -> str:
    """A short stable id from the cluster's representative record."""
    return hashlib.blake2b(f"{generation}/{shard}:{row}".encode(), digest_size=6).hexdigest()


def _group_by_shard(shards: list[str], rows: np.ndarray, members: np.ndarray, slot: np.ndarray,
                    flags: np.ndarray) -> dict[str, _ShardMembers]:
    grouped: dict[str, _ShardMembers] = {}
    names = np.array([shards[i] for i in members.tolist()], dtype=object)
    for name in sorted(set(names.tolist())):
        mine = np.flatnonzero(names == name)
        order = np.argsort(rows[members[mine]], kind="stable")
        mine = mine[order]
        grouped[name] = _ShardMembers(rows[members[mine]], slot[mine].astype(np.int32), flags[mine])
    return grouped
