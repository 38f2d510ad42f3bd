"""Near-duplicate clusters: ordinary duplication, and poison injected by repetition.

Pass 1 computes a MinHash signature per record (:mod:`dokumi.minhash`), finds
candidate pairs by LSH banding and checks them, and clusters records into
connected components (:mod:`dokumi.lsh`). It follows the shuffle protocol of
:mod:`dokumi.engines`: ``fit_keys`` signs one partition and gives a row per
record and band (the band key, and which record in which band), the rows are
grouped by key, and ``fit_groups`` checks and clusters the members of the keys
that two or more records share. A Dask scan signs and groups on its workers; a
local fit runs the same code with the corpus as one partition. Pass 2 only
looks up each record's cluster, so the state sent to worker processes holds the
clustered records alone.
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
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dokumi.engines import fit_in_one_process, shared_key_groups
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
# A key group's member, 16 bytes: an 8-byte hash of the record's shard name, then its row (or its place in
# an earlier scan's index, flagged by the top bit) in the low 48 bits and its band in the 15 bits above.
_MEMBER = np.dtype([("shard", "<u8"), ("place", "<u8")])
_PLACE_BITS = 48
_PLACE_MASK = np.uint64((1 << _PLACE_BITS) - 1)
_BAND_MASK = np.uint64((1 << 15) - 1)
_EARLIER_BIT = np.uint64(1 << 63)
KEY_SCHEMA = pa.schema([("key", pa.uint64()), ("member", pa.binary(_MEMBER.itemsize))])


@dataclass
class _ShardMembers:
    """Clustered records of one shard: sorted rows, their cluster (-1: none) and flags."""

    rows: np.ndarray
    cluster: np.ndarray
    flags: np.ndarray


@dataclass
class _Index:
    """Every record with words pass 1 saw (earlier scans first, then this corpus by shard name and row).

    ``cluster`` is each record's slot in ``cluster_ids_`` (-1: in no cluster); the band keys
    are computed again from the signatures when the index is saved.
    """

    signatures: np.ndarray
    generation: np.ndarray
    shard_index: np.ndarray
    shard_names: list[str]
    row: np.ndarray
    cluster: np.ndarray


@dataclass
class _Partition:
    """What one partition sends the driver whole, besides its key rows.

    Its records with words by shard name and row (shard ``i`` owns ``starts[i]:starts[i + 1]``),
    their signatures in one array, the positions of those near-duplicate to a protected
    document, and how many records it read.
    """

    shard_names: list[str]
    starts: np.ndarray
    rows: np.ndarray
    signatures: np.ndarray
    protected: np.ndarray
    records: int


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
    # pass 1 peak: the key table, signatures and clusters (docs/stages/near-duplicates.md, "Memory")
    state_bytes_per_record = 3700.0

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
        """Sign every record, cluster near-duplicates, and keep what scoring needs.

        The shuffle protocol run in this process (:func:`dokumi.engines.fit_in_one_process`),
        so a Dask scan's clusters are the same.
        """
        if self.fits_distributed:
            return fit_in_one_process(self, batches)
        keys, partition = self.fit_keys(batches)
        groups = shared_key_groups(pa.concat_tables([keys, self.fit_extra_keys()]))
        return self._fit_groups([groups], [partition], reread=batches)

    @property
    def fits_distributed(self) -> bool:
        """False with ``verify = "exact"``: its check re-reads the candidates' text, so the process
        that clusters must hold the corpus (a Dask scan fits the stage on its driver)."""
        return self.verify != "exact"

    def fit_keys(self, batches: Iterable[Batch]) -> tuple[pa.Table, _Partition]:
        """Sign one partition: a row per record with words and band (its band key; which record, in
        which band), and as the partial the partition's signatures and its records near-duplicate to
        a protected document (such a match depends on no other record, so it is found here)."""
        bands, rows = band_parameters(self.jaccard, self.num_perm)
        partition, columns = _sign_partition(self._hasher, batches)
        keys = band_keys(partition.signatures, bands, rows)
        if self.protect and len(partition.rows):
            reference = self._protected_reference(columns, bands, rows)
            partition.protected = self._protected_matches(partition.signatures, keys, reference)
        shard_hashes = np.array([_shard_hash(name) for name in partition.shard_names], dtype=np.uint64)
        members = _members(np.repeat(shard_hashes, np.diff(partition.starts)), partition.rows, bands)
        return _key_table(keys.ravel(), members), partition

    def fit_extra_keys(self) -> pa.Table:
        """The band keys of an earlier scan's records (``index``), grouped together with the corpus's."""
        if self.index is None:
            return KEY_SCHEMA.empty_table()
        bands, rows = band_parameters(self.jaccard, self.num_perm)
        earlier = _load_index(self.index, self._hasher.params())
        keys = _index_keys(self.index, earlier, bands, rows)
        shard_hashes = np.zeros(len(earlier.row), dtype=np.uint64)
        return _key_table(keys.ravel(), _members(shard_hashes, np.arange(len(earlier.row)), bands, earlier=True))

    def fit_groups(self, groups: Iterable[pa.Table], partials: list[_Partition]) -> NearDuplicates:
        """Check the members of every shared band key, cluster them, and keep what scoring needs.

        ``partials`` are every partition's signatures (any order); they are kept as the index
        that :meth:`save_state` writes.
        """
        return self._fit_groups(groups, partials, reread=None)

    def _fit_groups(self, groups: Iterable[pa.Table], partials: list[_Partition],
                    reread: Iterable[Batch] | None) -> NearDuplicates:
        if self.verify == "exact" and reread is None:
            raise ValueError('verify = "exact" re-reads the records: fit this stage with fit(), not fit_groups()')
        bands, rows = band_parameters(self.jaccard, self.num_perm)
        earlier = _load_index(self.index, self._hasher.params()) if self.index else None
        n_earlier = len(earlier.row) if earlier else 0
        corpus, signatures = _gather(partials, earlier, self.num_perm)
        # only records that share a band key with another can be clustered: the candidates
        nodes, buckets = _candidate_buckets(groups, corpus, n_earlier, bands)
        similar = self._similarity(signatures, nodes, n_earlier, corpus, reread)
        labels = nodes[cluster(buckets, np.arange(len(nodes)), similar)]  # each candidate's lowest node
        representatives, which, sizes = np.unique(labels, return_inverse=True, return_counts=True)
        in_cluster = sizes[which] > 1
        clustered = nodes[in_cluster]
        shared = sizes > 1
        slots = np.cumsum(shared) - 1  # a representative's cluster number, in node order

        generation = 1 + int(earlier.generation.max()) if earlier and len(earlier.generation) else 0
        n_nodes = len(signatures)
        shard_names = (earlier.shard_names if earlier else []) + corpus.shard_names
        shard_index = corpus.shard_index + len(shard_names) - len(corpus.shard_names)
        index = _Index(
            signatures=signatures,
            generation=np.concatenate([earlier.generation, np.full(len(corpus.rows), generation, np.int32)])
            if earlier else np.full(len(corpus.rows), generation, np.int32),
            shard_index=np.concatenate([earlier.shard_index, shard_index]) if earlier else shard_index,
            shard_names=shard_names,
            row=np.concatenate([earlier.row, corpus.rows]) if earlier else corpus.rows,
            cluster=np.full(n_nodes, -1, dtype=np.int32),
        )
        index.cluster[clustered] = slots[which[in_cluster]]
        self.cluster_ids_ = [
            _cluster_id(int(index.generation[node]), shard_names[index.shard_index[node]], int(index.row[node]))
            for node in representatives[shared].tolist()
        ]
        self.cluster_sizes_ = sizes[shared].astype(np.int64)
        self.cluster_earlier_ = np.bincount(which[nodes < n_earlier], minlength=len(sizes))[shared].astype(np.int64)
        self.records_ = corpus.records
        self.indexed_ = n_earlier
        self.bands_, self.rows_ = bands, rows
        self.protected_matches_ = int(len(corpus.protected))

        members = np.union1d(clustered[clustered >= n_earlier] - n_earlier, corpus.protected)
        member_nodes = members + n_earlier
        place = np.minimum(np.searchsorted(nodes, member_nodes), max(len(nodes) - 1, 0))
        candidate = nodes[place] == member_nodes if len(nodes) else np.zeros(len(members), dtype=bool)
        # a record in no cluster (protected only) is its own representative
        own = np.where(candidate, labels[place] if len(nodes) else member_nodes, member_nodes)
        flags = np.where(own == member_nodes, _REPRESENTATIVE, np.uint8(0)).astype(np.uint8)
        flags[np.isin(members, corpus.protected)] |= _PROTECTED
        self.members_ = _group_by_shard(corpus, members, index.cluster[member_nodes], flags)
        self.lsh_index_ = index
        return self

    def _similarity(self, signatures: np.ndarray, nodes: np.ndarray, n_earlier: int, corpus: _Corpus,
                    reread: Iterable[Batch] | None):
        """The check of candidate pairs, given as positions in ``nodes``."""
        if self.verify == "off":
            return None
        bar = self.jaccard
        if self.verify == "signature":
            return lambda left, right: estimated_jaccard(signatures, nodes[left], nodes[right]) >= bar
        sets = _shingle_sets(self._hasher, reread, corpus, nodes[nodes >= n_earlier] - n_earlier)

        def similar(left: np.ndarray, right: np.ndarray) -> np.ndarray:
            a, b = nodes[left], nodes[right]
            estimate = estimated_jaccard(signatures, a, b) >= bar
            exact = [
                exact_jaccard(sets[x - n_earlier], sets[y - n_earlier]) >= bar if min(x, y) >= n_earlier else e
                for x, y, e in zip(a.tolist(), b.tolist(), estimate.tolist())
            ]
            return np.array(exact, dtype=bool)

        return similar

    def _protected_reference(self, columns: Columns | None, bands: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Signatures and band keys of the protected documents with words (read once per partition)."""
        from dokumi.sources import open_inputs

        blocks = [
            self._hasher.signatures(_content(batch))
            for shard in open_inputs(self.protect)
            for batch in shard.batches(columns or Columns(), 1024)
            if batch.num_rows
        ]
        protected = np.concatenate(blocks) if blocks else np.zeros((0, self.num_perm), np.uint32)
        protected = protected[(protected != _EMPTY).any(axis=1)]
        return protected, band_keys(protected, bands, rows)

    def _protected_matches(self, signatures: np.ndarray, keys: np.ndarray,
                           reference: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """Positions in ``signatures`` of the records near-duplicate to a protected document, sorted."""
        protected, protected_keys = reference
        similar = None
        if self.verify != "off":
            def similar(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
                return (signatures[query] == protected[reference]).mean(axis=1) >= self.jaccard
        matched, _ = cross_matches(keys, protected_keys, similar)
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
        np.save(paths[1], band_keys(index.signatures, self.bands_, self.rows_))
        alone = index.cluster < 0
        table = pa.table({
            "generation": pa.array(index.generation, pa.int32()),
            "shard": pa.array(index.shard_names, pa.string()).take(index.shard_index).dictionary_encode(),
            "row": pa.array(index.row, pa.int64()),
            "cluster": pa.array(self.cluster_ids_, pa.string()).take(pa.array(index.cluster, mask=alone)),
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
    """This corpus's records with words, by shard name and row, gathered from the partitions.

    Shard ``i`` owns corpus records ``starts[i]:starts[i + 1]``; ``protected`` lists the
    corpus records near-duplicate to a protected document.
    """

    shard_names: list[str]
    starts: np.ndarray
    rows: np.ndarray
    protected: np.ndarray
    records: int

    @property
    def shard_index(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.shard_names), dtype=np.int32), np.diff(self.starts))


def _content(batch: Batch) -> pa.Array | list[str]:
    return batch.texts if batch.is_instruction or not batch.has("text") else batch.column("text")


def _sign_partition(hasher: MinHasher, batches: Iterable[Batch]) -> tuple[_Partition, Columns | None]:
    """Sign every record: the records with words, by shard name and row, and their signatures in
    one array (no protected matches yet); and the batches' column roles."""
    by_shard: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    columns = None
    records = 0
    for batch in batches:
        columns = columns or batch.columns
        if not batch.num_rows:
            continue
        signatures = hasher.signatures(_content(batch))
        has_words = np.flatnonzero((signatures != _EMPTY).any(axis=1))
        rows = batch.rows.to_numpy().astype(np.int64)[has_words]
        by_shard.setdefault(batch.shard, []).append((rows, signatures[has_words]))
        records += batch.num_rows
    names = sorted(by_shard)
    pieces = [piece for name in names for piece in by_shard[name]]
    starts = np.zeros(len(names) + 1, dtype=np.int64)
    np.cumsum([sum(len(rows) for rows, _ in by_shard[name]) for name in names], out=starts[1:])
    partition = _Partition(
        shard_names=names,
        starts=starts,
        rows=np.concatenate([rows for rows, _ in pieces]) if pieces else np.zeros(0, dtype=np.int64),
        signatures=np.concatenate([s for _, s in pieces]) if pieces else np.zeros((0, hasher.num_perm), np.uint32),
        protected=np.zeros(0, dtype=np.int64),
        records=records,
    )
    for begin, end in zip(starts[:-1].tolist(), starts[1:].tolist()):
        rows = partition.rows[begin:end]
        if len(rows) > 1 and (np.diff(rows) < 0).any():  # a shard's batches normally come in row order
            order = begin + np.argsort(rows, kind="stable")
            partition.rows[begin:end] = partition.rows[order]
            partition.signatures[begin:end] = partition.signatures[order]
    return partition, columns


def _shard_hash(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "little")


def _members(shard_hashes: np.ndarray, places: np.ndarray, bands: int, earlier: bool = False) -> np.ndarray:
    """The member of every (record, band) pair, record-major: the record's shard name hash and its row,
    or (``earlier``) its position in an earlier scan's index."""
    if len(places) and (int(places.max()) >> _PLACE_BITS or bands > _BAND_MASK + 1):
        raise ValueError(f"near_duplicates keys hold rows below 2**{_PLACE_BITS} and at most 32,768 bands")
    members = np.empty((len(places), bands), dtype=_MEMBER)
    members["shard"] = shard_hashes[:, None]
    members["place"] = places.astype(np.uint64)[:, None] | (np.arange(bands, dtype=np.uint64) << np.uint64(_PLACE_BITS))
    if earlier:
        members["place"] |= _EARLIER_BIT
    return members.ravel()


def _key_table(keys: np.ndarray, members: np.ndarray) -> pa.Table:
    """Key rows from band keys and their members, without copying either."""
    binary = pa.FixedSizeBinaryArray.from_buffers(KEY_SCHEMA.field("member").type, len(members),
                                                  [None, pa.py_buffer(members.view(np.uint8))])
    return pa.table([pa.array(keys, pa.uint64()), binary], schema=KEY_SCHEMA)


def _gather(partials: list[_Partition], earlier: _Index | None, num_perm: int) -> tuple[_Corpus, np.ndarray]:
    """The corpus's records from every partition, by shard name and row, and all signatures
    (the earlier index's first) in one array; the partials' arrays are released on the way."""
    if len(partials) == 1 and earlier is None:  # the local fit: already in order, nothing to copy
        only = partials[0]
        return _Corpus(only.shard_names, only.starts, only.rows, only.protected, only.records), only.signatures
    pieces: dict[str, list[tuple[_Partition, int]]] = {}
    for partial in partials:
        for i, name in enumerate(partial.shard_names):
            pieces.setdefault(name, []).append((partial, i))
    names = sorted(pieces)
    starts = np.zeros(len(names) + 1, dtype=np.int64)
    np.cumsum([sum(int(p.starts[i + 1] - p.starts[i]) for p, i in pieces[name]) for name in names], out=starts[1:])
    n_earlier = len(earlier.row) if earlier else 0
    signatures = np.empty((n_earlier + int(starts[-1]), num_perm), dtype=np.uint32)
    if earlier:
        signatures[:n_earlier] = earlier.signatures
        earlier.signatures = signatures[:n_earlier]
    rows = np.empty(int(starts[-1]), dtype=np.int64)
    protected = np.zeros(int(starts[-1]), dtype=bool)
    remaining = {id(partial): len(partial.shard_names) for partial in partials}
    for position, name in enumerate(names):
        parts = []
        for partial, i in pieces.pop(name):
            begin, end = int(partial.starts[i]), int(partial.starts[i + 1])
            matched = np.zeros(end - begin, dtype=bool)
            matched[partial.protected[(partial.protected >= begin) & (partial.protected < end)] - begin] = True
            parts.append((partial.rows[begin:end], partial.signatures[begin:end], matched))
            remaining[id(partial)] -= 1
            if not remaining[id(partial)]:  # the last shard of this partial: let its arrays go
                partial.rows = partial.signatures = partial.protected = None
        shard_rows, shard_signatures, matched = (np.concatenate(arrays) for arrays in zip(*parts))
        if len(parts) > 1:
            order = np.argsort(shard_rows, kind="stable")
            shard_rows, shard_signatures, matched = shard_rows[order], shard_signatures[order], matched[order]
        begin, end = int(starts[position]), int(starts[position + 1])
        rows[begin:end] = shard_rows
        signatures[n_earlier + begin: n_earlier + end] = shard_signatures
        protected[begin:end] = matched
    corpus = _Corpus(shard_names=names, starts=starts, rows=rows, protected=np.flatnonzero(protected),
                     records=sum(partial.records for partial in partials))
    return corpus, signatures


def _candidate_buckets(groups: Iterable[pa.Table], corpus: _Corpus, n_earlier: int,
                       bands: int) -> tuple[np.ndarray, np.ndarray]:
    """The records (nodes: earlier index first, then the corpus) that share a band key with another,
    ascending, and their bucket in every band: the number of the key group where they share
    one, else a number of their own. Clustering them alone equals clustering every record."""
    group_of, members = [], []
    groups_seen = 0
    for table in groups:
        for chunk in table.column("members").chunks:
            lengths = pc.list_value_length(chunk).to_numpy(zero_copy_only=False)
            flat = chunk.flatten()
            data = np.frombuffer(flat.buffers()[1], dtype=_MEMBER)[flat.offset: flat.offset + len(flat)]
            group_of.append(np.repeat(np.arange(groups_seen, groups_seen + len(chunk)), lengths))
            members.append(data)
            groups_seen += len(chunk)
    member = np.concatenate(members) if members else np.zeros(0, dtype=_MEMBER)
    group = np.concatenate(group_of) if group_of else np.zeros(0, dtype=np.int64)
    place, shard = member["place"], member["shard"]
    band = ((place >> np.uint64(_PLACE_BITS)) & _BAND_MASK).astype(np.int64)
    number = (place & _PLACE_MASK).astype(np.int64)
    earlier = (place & _EARLIER_BIT) != 0
    node = np.where(earlier, number, -1)
    node[~earlier] = n_earlier + _corpus_nodes(shard[~earlier], number[~earlier], corpus)
    nodes, position = np.unique(node, return_inverse=True)
    buckets = np.empty((len(nodes), bands), dtype=np.int64)
    buckets[:] = (groups_seen + np.arange(len(nodes)))[:, None]
    buckets[position, band] = group
    return nodes, buckets


def _corpus_nodes(shard_hashes: np.ndarray, rows: np.ndarray, corpus: _Corpus) -> np.ndarray:
    """Corpus node of each (shard name hash, row)."""
    hashes = np.array([_shard_hash(name) for name in corpus.shard_names], dtype=np.uint64)
    if len(np.unique(hashes)) < len(hashes):
        raise ValueError("two shard names have the same 64-bit hash: rename a shard")
    by_hash = np.argsort(hashes)
    found = np.minimum(np.searchsorted(hashes[by_hash], shard_hashes), max(len(hashes) - 1, 0))
    if len(shard_hashes) and (not len(hashes) or (hashes[by_hash][found] != shard_hashes).any()):
        raise ValueError("a key group names a record of a shard that no partition sent")
    shard = by_hash[found] if len(hashes) else found
    nodes = np.empty(len(rows), dtype=np.int64)
    order = np.argsort(shard, kind="stable")
    bounds = np.searchsorted(shard[order], np.arange(len(hashes) + 1))
    for i in range(len(hashes)):
        mine = order[bounds[i]: bounds[i + 1]]
        if len(mine):
            shard_rows = corpus.rows[corpus.starts[i]: corpus.starts[i + 1]]
            nodes[mine] = corpus.starts[i] + np.searchsorted(shard_rows, rows[mine])
    return nodes


def _shingle_sets(hasher: MinHasher, batches: Iterable[Batch], corpus: _Corpus,
                  needed: np.ndarray) -> dict[int, np.ndarray]:
    """Re-read the corpus for the shingle sets of the corpus records ``needed`` (ascending)."""
    shard_of = corpus.shard_index[needed]
    wanted = {
        corpus.shard_names[i]: (corpus.rows[needed[shard_of == i]], needed[shard_of == i])
        for i in np.unique(shard_of).tolist()
    }
    sets: dict[int, np.ndarray] = {}
    for batch in batches:
        if not batch.num_rows or batch.shard not in wanted:
            continue
        rows, nodes = wanted[batch.shard]
        batch_rows = batch.rows.to_numpy()
        where = np.minimum(np.searchsorted(rows, batch_rows), len(rows) - 1)
        hits = np.flatnonzero(rows[where] == batch_rows)
        if not len(hits):
            continue
        hashes, offsets = hasher.shingle_hashes(_content(batch))
        for i in hits.tolist():
            sets[int(nodes[where[i]])] = np.unique(hashes[offsets[i]: offsets[i + 1]])
    return sets


def _load_index(path: str, params: dict[str, Any]) -> _Index:
    folder = _index_folder(path)
    try:
        saved = json.loads((folder / "params.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"index = {path!r}: not a near_duplicates state folder ({error})") from None
    if saved.get("format") != STATE_FORMAT:
        raise ValueError(f"index = {path!r}: format {saved.get('format')!r}, expected {STATE_FORMAT!r}")
    for key, value in params.items():
        if saved.get(key) != value:
            raise ValueError(f"index = {path!r} was built with {key}={saved.get(key)!r}; this stage uses {value!r}")
    table = pq.read_table(folder / "records.parquet")
    shard = table.column("shard").combine_chunks()
    if not pa.types.is_dictionary(shard.type):
        shard = shard.dictionary_encode()
    return _Index(
        signatures=np.load(folder / "signatures.npy"),
        generation=table.column("generation").to_numpy().astype(np.int32),
        shard_index=shard.indices.to_numpy(zero_copy_only=False).astype(np.int32),
        shard_names=[str(name) for name in shard.dictionary.to_pylist()],
        row=table.column("row").to_numpy().astype(np.int64),
        cluster=np.full(table.num_rows, -1, dtype=np.int32),
    )


def _index_folder(path: str) -> Path:
    folder = Path(path)
    if not (folder / "params.json").exists() and (folder / "state" / "near_duplicates").is_dir():
        folder = folder / "state" / "near_duplicates"
    return folder


def _index_keys(path: str, index: _Index, bands: int, rows: int) -> np.ndarray:
    """The saved band keys of an index, or new ones where it was saved with other bands."""
    folder = _index_folder(path)
    saved = json.loads((folder / "params.json").read_text(encoding="utf-8"))
    if (saved.get("bands"), saved.get("rows")) == (bands, rows):
        return np.load(folder / "keys.npy")
    return band_keys(index.signatures, bands, rows)


def _cluster_id(generation: int, shard: str, row: int) -> str:
    """A short stable id from the cluster's representative record."""
    return hashlib.blake2b(f"{generation}/{shard}:{row}".encode(), digest_size=6).hexdigest()


def _group_by_shard(corpus: _Corpus, members: np.ndarray, slot: np.ndarray,
                    flags: np.ndarray) -> dict[str, _ShardMembers]:
    """Scoring's lookup: per shard name, the rows of ``members`` (corpus records, ascending) with their
    cluster slot and flags."""
    shard_of = corpus.shard_index[members]
    return {
        corpus.shard_names[i]: _ShardMembers(corpus.rows[members[shard_of == i]], slot[shard_of == i].astype(np.int32),
                                             flags[shard_of == i])
        for i in np.unique(shard_of).tolist()
    }
