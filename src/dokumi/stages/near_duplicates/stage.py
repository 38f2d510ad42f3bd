"""Near-duplicate clusters: ordinary duplication, and poison injected by repetition.

Pass 1 is one :class:`~dokumi.fitplan.GroupByKey` step: every record with
words is signed (:mod:`dokumi.minhash`, from the batch's shared words) and
gives one ``(band key, content)`` row per LSH band; the engine groups the
rows by key, and the stage checks and clusters the contents that share a key
(:mod:`dokumi.lsh`). Records are nodes by content: identical records are one
node that counts them, and every choice that could depend on order (which
contents a check compares, which one represents a cluster) follows the
content keys, so the clusters are the same however the corpus arrives. With
``verify = "exact"`` a second step reads the candidates' shingle sets.

Pass 2 looks each record up by its content key; a record the fit never saw
is signed and probed against the clusters' band keys, so a pipeline fitted on
one corpus scores another against it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dokumi.arrays import distinct, lookup, rank_in_runs
from dokumi.fitplan import Fold, GroupByKey, Reduce, Step
from dokumi.lsh import (
    band_keys,
    band_parameters,
    cluster,
    cross_matches,
    estimated_jaccard,
    exact_jaccard,
)
from dokumi.minhash import MinHasher
from dokumi.records import Batch
from dokumi.stage import Stage, StageContext, StageResult
from dokumi.stages.near_duplicates.index import Index, load_index, save_index
from dokumi.stages.near_duplicates.protected import ProtectedSet
from dokumi.stages.near_duplicates.signed import (
    KEY_SCHEMA,
    NO_ID,
    KeyedRows,
    Signed,
    id_keys,
    key_rows,
    member_arrays,
    sign,
)

MODES = ("repetition", "dedup")
VERIFY = ("signature", "exact", "off")
# Contents per cluster that a record the fit never saw is compared with (bounds what workers hold)
PROBE_MEMBERS = 32
_REPRESENTATIVE = np.uint8(1)
_PROTECTED = np.uint8(2)
# the one content kept of its group of copies (contents of one cluster whose word sets are near-identical);
# every other member of the group is a redundant copy
_KEPT = np.uint8(4)
# word-set MinHash of clustered contents, for telling copies from records that share a passage (64 values:
# the estimate's error is about 0.05 at the 0.8 bar)
COPY_PERM = 64
# the clustered contents' word-set signatures, saved beside the index for copies that probe new records
WORDS_FILE = "words.npy"


class NearDuplicates(Stage):
    """Score records by the near-duplicate cluster they belong to.

    Parameters
    ----------
    mode:
        ``"repetition"`` (default): every member of a large cluster is suspect, the
        first copy included, because repetition is how the poison works; the score
        grows with the cluster's size. ``"dedup"``: one representative per cluster
        scores 0, every other member scores at least 0.5. The representative is
        the record of an earlier scan (``index``) where there is one, else the
        content of lowest content key, and among identical records the one of
        lowest id key: the same whichever order the records come in.
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
        from the signatures), ``"exact"`` (Jaccard of the shingle sets; a second
        read of the corpus for the candidates; pairs with earlier-scan records use
        the estimate) or ``"off"`` (every band collision is a near-duplicate).
    min_cluster_size:
        Repetition mode: the cluster size at which members score 0.5 (default 50;
        templated but honest text, e.g. "the basic unit of money in <country>", forms
        clusters of tens). Scores rise towards 1 above it and fall towards 0 below.
    min_cluster_share:
        Repetition mode: a cluster holding this share of all records (default 0.01)
        scores 0.5 even when smaller than ``min_cluster_size``, so that small
        fine-tuning sets are screened too (never below 2 records).
    duplicate_jaccard:
        Repetition mode: which members of a cluster are redundant copies (the
        ``duplicate`` decision, where the recipe asks for it). Within a cluster,
        contents whose word sets overlap by this Jaccard similarity or more
        (default 0.8) are copies of each other, joined transitively; each group
        of copies keeps one. Two package descriptions that share a paragraph
        join a cluster at ``jaccard`` 0.3, but each has words of its own and
        neither is a copy. 1.0 makes every member but the representative a copy
        (as in dedup mode, where every cluster is one group).
    protect:
        Side input: Parquet/JSONL files or a folder of them (evaluation sets,
        confidential documents): records near-duplicate to one score 1 with
        ``near-duplicate:protected``.
    index:
        Side input: ``state/near_duplicates/`` of an earlier scan (or that scan's
        output folder): its records join the clusters, so new shards are checked
        against the earlier corpus. The state this run saves includes them.
    """

    name = "near_duplicates"
    needs_fit = True
    # fitted state (set by the fit plan's finishing steps)
    members_: _Members
    probe_: _Probe
    _copy_rank: np.ndarray
    side_inputs = {"protect": "corpus", "index": "state"}
    # pass 1 peak on the driver: key rows (20 B per band), their sort, signatures, clusters; a pretraining scan
    # grew 4,007 B per record from 100,000 to 1,000,000 glosses (docs/architecture.md, "Memory")
    state_bytes_per_record = 3600.0

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
        duplicate_jaccard: float = 0.8,
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
        if (isinstance(duplicate_jaccard, bool) or not isinstance(duplicate_jaccard, (int, float))
                or not 0 < duplicate_jaccard <= 1):
            raise ValueError(f"duplicate_jaccard = {duplicate_jaccard!r} must be a number in (0, 1]")
        for name, path in (("protect", protect), ("index", index)):
            if path is not None and (not isinstance(path, (str, Path)) or not str(path)):
                raise ValueError(f"{name} = {path!r} must be a path")
        self.mode = mode
        self.jaccard = float(jaccard)
        self.ngram = ngram
        self.num_perm = num_perm
        self.seed = seed
        self.scheme = scheme
        self.verify = verify
        self.min_cluster_size = min_cluster_size
        self.min_cluster_share = float(min_cluster_share)
        self.duplicate_jaccard = float(duplicate_jaccard)
        self.protect = None if protect is None else str(protect)
        self.index = None if index is None else str(index)
        self._hasher = MinHasher(num_perm=num_perm, seed=seed, ngram=ngram, scheme=scheme)
        self._word_hasher = MinHasher(num_perm=COPY_PERM, seed=seed, ngram=1, scheme=scheme)

    @property
    def bands(self) -> tuple[int, int]:
        """LSH bands and rows per band for ``jaccard`` (datasketch's choice). Kept on the stage, so that the
        copies that workers receive do not integrate it again: about a second of CPU per process."""
        chosen = getattr(self, "_bands", None)
        if chosen is None or chosen[0] != (self.jaccard, self.num_perm):
            chosen = self._bands = ((self.jaccard, self.num_perm), band_parameters(self.jaccard, self.num_perm))
        return chosen[1]

    # ---- setup: side inputs ---------------------------------------------------------------------

    def setup(self, context: StageContext) -> None:
        """Sign the protected documents and load an earlier scan's index, before the corpus is read."""
        super().setup(context)
        bands, rows = self.bands
        self._protected = ProtectedSet.of(context.inputs["protect"], self._hasher, bands, rows) \
            if "protect" in context.inputs else None
        self._earlier: tuple[Index, np.ndarray] | None = None
        if "index" in context.inputs:
            self._earlier = load_index(context.inputs["index"], self._hasher.params(), bands, rows)

    # ---- pass 1 ---------------------------------------------------------------------------------

    def fit_plan(self) -> list[Step]:
        """Sign and group by band key; with ``verify = "exact"``, then read the candidates' shingles."""
        plan: list[Step] = [GroupByKey("band-keys", self._keys, KEY_SCHEMA, self._cluster,
                                       partial=Fold(Signed, self._sign, self._merge_signed), extra=self._earlier_keys)]
        if self.verify == "exact":
            plan.append(Reduce("shingle-sets", dict, self._shingles, _merged_sets, self._cluster_exactly,
                               needed=lambda: len(getattr(self, "_wanted", ())) > 0))
        if self.mode == "repetition":
            plan.append(Reduce("copy-words", KeyedRows, self._copy_words, KeyedRows.merged, self._group_copies,
                               needed=lambda: len(getattr(self, "_copies_wanted", ())) > 0))
        return plan

    def _keys(self, batch: Batch) -> pa.Table:
        with_words, signatures = sign(self._hasher, batch)
        bands, rows = self.bands
        return key_rows(batch.content_keys[with_words], band_keys(signatures, bands, rows))

    def _sign(self, signed: Signed, batch: Batch) -> Signed:
        with_words, signatures = sign(self._hasher, batch)
        # the lowest id key of each content: which of identical records represents it
        ids = id_keys([batch.ids[i] for i in with_words.tolist()])
        signed.add(batch.content_keys[with_words], signatures, ids, batch.num_rows)
        return signed

    def _merge_signed(self, parts: list[Signed]) -> Signed:
        return Signed.merged(parts, self.num_perm)

    def _earlier_keys(self) -> pa.Table:
        """The band-key rows of an earlier scan's contents, grouped together with the corpus's."""
        if self._earlier is None:
            return KEY_SCHEMA.empty_table()
        index, keys = self._earlier
        return key_rows(index.key, keys)

    def _cluster(self, groups: Any, signed: Signed) -> None:
        """Nodes are distinct contents (this corpus's and an earlier scan's); cluster the candidates."""
        signed = signed.combined(self.num_perm)
        earlier = self._earlier[0] if self._earlier is not None else None
        nodes = _Nodes.of(signed, earlier, self.num_perm)
        # the key groups are read as they arrive: on Dask the last buckets are still grouped meanwhile
        candidates, buckets = nodes.candidates(groups, self.bands[0])
        self._pending = (nodes, candidates, buckets)
        if self.verify != "exact":
            self._finish(self._similarity(None))
            return
        # the workers of the next round need only which contents to read the shingles of
        self._wanted = np.sort(nodes.key[candidates[nodes.corpus[candidates]]])

    def _shingles(self, sets: dict[int, np.ndarray], batch: Batch) -> dict[int, np.ndarray]:
        """Round 2 (``verify = "exact"``): the shingle sets of the candidate contents in ``batch``."""
        keys = batch.content_keys
        hits = np.flatnonzero(lookup(self._wanted, keys)[0])
        if not len(hits):
            return sets
        hashes, offsets = self._hasher.shingle_hashes(batch.select(hits).content_array())
        for i, key in enumerate(keys[hits].tolist()):
            sets.setdefault(key, distinct(hashes[offsets[i]: offsets[i + 1]]))
        return sets

    def _cluster_exactly(self, sets: dict[int, np.ndarray]) -> None:
        self._finish(self._similarity(sets))

    def _copy_words(self, signatures: KeyedRows, batch: Batch) -> KeyedRows:
        """Round after clustering (repetition mode): a MinHash of the word set of each clustered content."""
        keys = batch.content_keys
        hits = np.flatnonzero(lookup(self._copies_wanted, keys)[0])
        if len(hits):
            signatures.add(keys[hits], self._word_hasher.signatures_of_words(batch.select(hits).words))
        return signatures

    def _group_copies(self, gathered: KeyedRows) -> None:
        """Which clustered contents are kept: one per group of near-identical contents within a cluster.

        Two contents of one cluster are copies of each other when their word sets overlap by
        ``duplicate_jaccard`` or more (estimated from the word-set MinHash); groups are joined
        transitively and keep their lowest-rank content (the cluster's representative where it is in
        the group). Contents without a word-set signature (an earlier scan's) stay groups of their own.
        """
        members = self.members_
        signed, signatures = gathered.table(COPY_PERM)
        has_words, row = lookup(signed, members.key)
        clustered = np.flatnonzero(has_words & (members.slot >= 0))
        kept = members.flags & _REPRESENTATIVE > 0
        kept[members.slot < 0] = True
        if len(clustered) > 1:
            words = signatures[row[clustered]]
            rank = np.argsort(np.argsort(self._copy_rank[clustered], kind="stable"), kind="stable")
            slot = members.slot[clustered]
            bar = self.duplicate_jaccard

            def near(left: np.ndarray, right: np.ndarray) -> np.ndarray:
                return (slot[left] == slot[right]) & (estimated_jaccard(words, left, right) >= bar)

            keys = band_keys(words, *band_parameters(bar, COPY_PERM))
            # the cluster's representative (its lowest rank) keeps its own group; each other group its lowest
            kept[clustered] = cluster(keys, rank, near) == np.arange(len(clustered))
        flags = members.flags & ~_KEPT
        flags[kept] |= _KEPT
        self.members_ = _Members(members.key, members.slot, flags, members.id)
        self._copies_wanted = np.zeros(0, dtype=np.uint64)
        del self._copy_rank
        # records the fit never saw are compared with the word sets of the contents they are probed against
        probe = self.probe_
        has_words, row = lookup(signed, probe.content)
        words = np.zeros((len(probe.content), COPY_PERM), dtype=np.uint32)
        words[has_words] = signatures[row[has_words]]
        probe.set_words(words, has_words)

    def _similarity(self, sets: dict[int, np.ndarray] | None) -> Any:
        """The check of candidate pairs, given as positions in the candidate list."""
        if self.verify == "off":
            return None
        nodes, candidates, _ = self._pending
        signatures, bar = nodes.signature, self.jaccard
        if sets is None:
            return lambda left, right: estimated_jaccard(signatures, candidates[left], candidates[right]) >= bar

        def similar(left: np.ndarray, right: np.ndarray) -> np.ndarray:
            a, b = candidates[left], candidates[right]
            estimate = estimated_jaccard(signatures, a, b) >= bar
            keys = nodes.key
            return np.array([
                exact_jaccard(sets[int(keys[x])], sets[int(keys[y])]) >= bar
                if int(keys[x]) in sets and int(keys[y]) in sets else e
                for x, y, e in zip(a.tolist(), b.tolist(), estimate.tolist())
            ], dtype=bool)

        return similar

    def _finish(self, similar: Any) -> None:
        nodes, candidates, buckets = self._pending
        del self._pending
        self._wanted = np.zeros(0, dtype=np.uint64)
        rank = nodes.rank[candidates]
        local_rank = np.empty(len(candidates), dtype=np.int64)
        local_rank[np.argsort(rank, kind="stable")] = np.arange(len(candidates))
        labels = candidates[cluster(buckets, local_rank, similar)] if len(candidates) else candidates
        # every node is a cluster of its own records; candidates join their lowest-rank node's
        label = np.arange(len(nodes))
        label[candidates] = labels
        roots, which = np.unique(label, return_inverse=True)
        sizes = np.bincount(which, weights=nodes.count + nodes.earlier_count).astype(np.int64)
        shared = sizes > 1
        slot = np.cumsum(shared) - 1  # cluster number of each root, in root order
        node_slot = np.where(shared[which], slot[which], -1)
        generation = nodes.generation
        self.cluster_ids_ = _cluster_ids(generation[roots[shared]], nodes.key[roots[shared]])
        self.cluster_sizes_ = sizes[shared]
        self.cluster_earlier_ = np.bincount(which, weights=nodes.earlier_count).astype(np.int64)[shared]
        self.records_ = nodes.records
        self.indexed_ = int(nodes.earlier_count.sum())
        self.bands_, self.rows_ = self.bands
        # records near-duplicate to a protected document: found once, from every content's signature
        protected = np.zeros(len(nodes), dtype=bool)
        if self._protected is not None:
            protected = self._protected.matches(nodes.signature, band_keys(nodes.signature, *self.bands),
                                                None if self.verify == "off" else self.jaccard)
        self.protected_matches_ = int(nodes.count[protected & nodes.corpus].sum())
        # scoring's lookup by content key: the contents in a cluster or near a protected document
        members = np.flatnonzero((node_slot >= 0) | protected)
        flags = np.where(label[members] == members, _REPRESENTATIVE, np.uint8(0)).astype(np.uint8)
        flags[protected[members]] |= _PROTECTED
        # until the word sets are compared (repetition mode), each cluster keeps its representative alone
        flags[label[members] == members] |= _KEPT
        grouped = self.mode == "repetition" and self.duplicate_jaccard < 1.0
        self._copies_wanted = np.sort(nodes.key[members[(node_slot[members] >= 0) & nodes.corpus[members]]]) \
            if grouped else np.zeros(0, dtype=np.uint64)
        if grouped:
            self._copy_rank = nodes.rank[members]  # the driver's, until the copy-words round ends
        self.members_ = _Members(nodes.key[members], node_slot[members].astype(np.int32), flags, nodes.id[members])
        self.known_ = nodes.key
        # probing a record the fit never saw: the signatures of up to PROBE_MEMBERS contents per cluster
        # (its representative first, then by content key), so that what workers hold is bounded per cluster
        clustered = members[node_slot[members] >= 0]
        by_cluster = clustered[np.lexsort((nodes.rank[clustered], node_slot[clustered]))]
        clustered = np.sort(by_cluster[rank_in_runs(node_slot[by_cluster]) < PROBE_MEMBERS])
        self.probe_ = _Probe(nodes.signature[clustered], self.bands, node_slot[clustered].astype(np.int32),
                             nodes.key[clustered], clustered)
        self.index_ = Index(key=nodes.key, signature=nodes.signature, count=nodes.count + nodes.earlier_count,
                            id=nodes.id, generation=generation,
                            cluster=[self.cluster_ids_[s] if s >= 0 else None for s in node_slot.tolist()])

    # ---- pass 2 ---------------------------------------------------------------------------------

    def score(self, batch: Batch) -> StageResult:
        if not hasattr(self, "members_"):
            raise RuntimeError("NearDuplicates.score() needs fit() first (pass 1)")
        n = batch.num_rows
        scores = np.zeros(n)
        reasons: list[list[str]] = [[] for _ in range(n)]
        if not n:
            return StageResult(scores, reasons)
        keys = batch.content_keys
        slot = np.full(n, -1, dtype=np.int32)
        flags = np.zeros(n, dtype=np.uint8)
        found, where = lookup(self.members_.key, keys)
        slot[found] = self.members_.slot[where[found]]
        flags[found] = self.members_.flags[where[found]]
        if found.any():
            # among identical records, the one of lowest id key represents the content
            ids = id_keys([batch.ids[i] for i in np.flatnonzero(found).tolist()])
            lowest = ids == self.members_.id[where[found]]
            flags[np.flatnonzero(found)[~lowest]] &= ~(_REPRESENTATIVE | _KEPT)
        unknown = np.flatnonzero(~lookup(self.known_, keys)[0])
        if len(unknown):
            self._probe(batch.select(unknown), unknown, slot, flags)
        for i in np.flatnonzero((slot >= 0) | (flags & _PROTECTED > 0)).tolist():
            if slot[i] >= 0:
                size = int(self.cluster_sizes_[slot[i]])
                reason = f"near-duplicate:cluster={self.cluster_ids_[slot[i]]},size={size}"
                if self.cluster_earlier_[slot[i]]:
                    reason += f",earlier={int(self.cluster_earlier_[slot[i]])}"
                reasons[i].append(reason)
                scores[i] = self._cluster_score(size, bool(flags[i] & _REPRESENTATIVE))
            if flags[i] & _PROTECTED:
                reasons[i].append("near-duplicate:protected")
                scores[i] = 1.0
        # a redundant copy: a member of a group of copies other than the one kept (one copy stays, for
        # redundancy is no evidence of an attack; a repetition attack is left with its one representative)
        duplicate = (slot >= 0) & (flags & _KEPT == 0) & (flags & _PROTECTED == 0)
        return StageResult(scores, reasons, duplicate)

    def _probe(self, batch: Batch, positions: np.ndarray, slot: np.ndarray, flags: np.ndarray) -> None:
        """Records the fit never saw: signed, and matched against the clusters and the protected set."""
        with_words, signatures = sign(self._hasher, batch)
        if not len(with_words):
            return
        keys = band_keys(signatures, *self.bands)
        bar = None if self.verify == "off" else self.jaccard
        targets = positions[with_words]
        if self._protected is not None:
            flags[targets[self._protected.matches(signatures, keys, bar)]] |= _PROTECTED
        probe = self.probe_
        similar = None
        if bar is not None:
            def similar(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
                return (signatures[query] == probe.signatures[reference]).mean(axis=1) >= bar
        matched, reference = cross_matches(keys, probe.keys, similar)
        slot[targets[matched]] = probe.slot[reference]
        if probe.words is not None and len(matched):
            # a new record is a copy only when its word set is near a clustered member's of the same cluster
            words = self._word_hasher.signatures_of_words(batch.select(with_words[matched]).words)
            for i, target in enumerate(matched.tolist()):
                same = np.flatnonzero((probe.slot == slot[targets[target]]) & probe.has_words)
                if not ((probe.words[same] == words[i]).mean(axis=1) >= self.duplicate_jaccard).any():
                    flags[targets[target]] |= _KEPT

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
        """Write every content seen (an earlier index's included) for a later scan's ``index``."""
        if not hasattr(self, "index_"):
            raise RuntimeError("save_state needs the process that ran fit(): copies sent to workers drop the index")
        directory = Path(directory)
        return save_index(directory, self.index_, self._hasher.params(), self.bands_, self.rows_) + \
            self.probe_.save(directory)

    def __getstate__(self) -> dict[str, Any]:
        # Workers only score: the index of every content (512 bytes each) stays in the process that fitted.
        # So do the driver's working state between rounds and an earlier scan's index.
        state = {k: v for k, v in self.__dict__.items() if k not in ("index_", "_pending", "_earlier", "_copy_rank")}
        if len(getattr(self, "_copies_wanted", ())):
            # the copy-words round's workers gather word sets; the probe is for scoring, once that round is done
            state.pop("probe_", None)
        return state


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


class _Nodes:
    """Every distinct content, ascending by key: this corpus's (``count``) and an earlier scan's (``earlier_count``)."""

    def __init__(self, key: np.ndarray, signature: np.ndarray, count: np.ndarray, earlier_count: np.ndarray,
                 id: np.ndarray, generation: np.ndarray, records: int) -> None:
        self.key, self.signature, self.count, self.earlier_count = key, signature, count, earlier_count
        self.id, self.generation, self.records = id, generation, records
        self.corpus = count > 0
        # the order every choice follows: an earlier scan's contents first, then by content key
        order = np.lexsort((key, earlier_count == 0))
        self.rank = np.empty(len(key), dtype=np.int64)
        self.rank[order] = np.arange(len(key))

    def __len__(self) -> int:
        return len(self.key)

    @classmethod
    def of(cls, signed: Signed, earlier: Index | None, num_perm: int) -> _Nodes:
        if earlier is None or not len(earlier):
            generation = np.zeros(len(signed.key), dtype=np.int32)
            return cls(signed.key, signed.signature, signed.count, np.zeros(len(signed.key), np.int64),
                       signed.id, generation, signed.records)
        key = np.union1d(earlier.key, signed.key)
        mine = np.searchsorted(key, signed.key)
        theirs = np.searchsorted(key, earlier.key)
        signature = np.empty((len(key), num_perm), dtype=np.uint32)
        signature[theirs] = earlier.signature
        signature[mine] = signed.signature
        count = np.zeros(len(key), np.int64)
        count[mine] = signed.count
        earlier_count = np.zeros(len(key), np.int64)
        earlier_count[theirs] = earlier.count
        ids = np.full(len(key), NO_ID, dtype=np.uint64)
        ids[theirs] = earlier.id
        ids[mine] = np.minimum(ids[mine], signed.id)
        newest = int(earlier.generation.max()) + 1 if len(earlier.generation) else 0
        generation = np.full(len(key), newest, dtype=np.int32)
        generation[theirs] = earlier.generation
        return cls(key, signature, count, earlier_count, ids, generation, signed.records)

    def candidates(self, groups: Iterable[pa.Table], bands: int) -> tuple[np.ndarray, np.ndarray]:
        """The nodes that share a band key with another row, ascending, and their bucket in every band:
        the number of the key group where they share one, else a number of their own.

        Read group by group into the narrowest integers that hold them: there is one member row per
        record and shared band, the largest table of the fit.
        """
        group, node, band = [], [], []
        seen = 0
        for table in groups:
            for chunk, content, bands_of in member_arrays(table):
                known, at = lookup(self.key, content)
                if not known.all():
                    raise ValueError("a key group names a content that no partition signed")
                lengths = np.diff(chunk.offsets.to_numpy())
                group.append(np.repeat(np.arange(seen, seen + len(chunk), dtype=np.int64), lengths))
                node.append(at.astype(np.int32 if len(self.key) < 2**31 else np.int64))
                band.append(bands_of.astype(np.int16))
                seen += len(chunk)
        group_of = np.concatenate(group) if group else np.zeros(0, dtype=np.int64)
        node_of = np.concatenate(node) if node else np.zeros(0, dtype=np.int64)
        band_of = np.concatenate(band) if band else np.zeros(0, dtype=np.int16)
        del group, node, band
        nodes = distinct(node_of)
        width = np.int32 if seen + len(nodes) < 2**31 else np.int64
        buckets = np.empty((len(nodes), bands), dtype=width)
        buckets[:] = (seen + np.arange(len(nodes), dtype=width))[:, None]
        # each member's row among the candidates, by a table over all nodes: 9x faster than a binary search
        row = np.zeros(len(self.key), dtype=width)
        row[nodes] = np.arange(len(nodes), dtype=width)
        buckets[row[node_of], band_of] = group_of
        return nodes.astype(np.int64), buckets


class _Members:
    """Scoring's lookup: clustered or protected contents (ascending keys), their cluster slot, flags, lowest id."""

    def __init__(self, key: np.ndarray, slot: np.ndarray, flags: np.ndarray, id: np.ndarray) -> None:
        self.key, self.slot, self.flags, self.id = key, slot, flags, id


class _Probe:
    """The clustered contents' signatures (``rows``: their positions in the index), to place a record the
    fit never saw, and their word-set signatures, to tell whether it is a copy.

    Their band keys are computed when a record the fit never saw first needs them. Once the stage has
    saved its state (:meth:`save`), pickled copies leave the signatures and word sets out too and read
    them from the saved files then: in a scan every record was fitted, and the copies sent to workers and
    kept for ``--resume`` are spared 768 bytes per clustered content (300,000 repeated glosses: 300 MB in
    every copy).
    """

    def __init__(self, signatures: np.ndarray, bands: tuple[int, int], slot: np.ndarray, content: np.ndarray,
                 rows: np.ndarray) -> None:
        self.slot, self.content, self.rows, self.bands = slot, content, rows, bands
        self._signatures: np.ndarray | None = signatures
        self._keys: np.ndarray | None = None
        # word-set signatures, once compared (repetition mode): whether a new record is a copy of a member
        self._words: np.ndarray | None = None
        self.compared = False
        self.has_words = np.zeros(len(slot), dtype=bool)
        self.saved: str | None = None  # the state folder the arrays are read from, in copies

    def set_words(self, words: np.ndarray, has_words: np.ndarray) -> None:
        self._words, self.has_words, self.compared = words, has_words, True

    @property
    def signatures(self) -> np.ndarray:
        if self._signatures is None:
            self._load()
        return cast(np.ndarray, self._signatures)

    @property
    def keys(self) -> np.ndarray:
        if self._keys is None:
            self._keys = band_keys(self.signatures, *self.bands)
        return self._keys

    @property
    def words(self) -> np.ndarray | None:
        if self._words is None and self.compared:
            self._load()
        return self._words

    def save(self, directory: Path) -> list[Path]:
        """Write the word-set signatures beside the saved index; from now on copies read the signatures and
        word sets from ``directory``. Returns the file written (none when the words were never compared)."""
        written = []
        if self.compared:
            path = directory / WORDS_FILE
            np.save(path, cast(np.ndarray, self.words))
            written.append(path)
        self.saved = str(directory.resolve())
        return written

    def _load(self) -> None:
        folder = Path(cast(str, self.saved))
        try:
            saved = pq.read_table(folder / "contents.parquet", columns=["content"]).column("content").to_numpy()
            if len(saved) <= int(self.rows.max(initial=-1)) or \
                    not np.array_equal(saved[self.rows].astype(np.uint64), self.content):
                raise ValueError("it holds another fit's contents")
            self._signatures = np.load(folder / "signatures.npy", mmap_mode="r")[self.rows]
            if self.compared:
                self._words = np.load(folder / WORDS_FILE)
        except (OSError, ValueError, IndexError, pa.ArrowException) as error:
            raise RuntimeError(f"near_duplicates: a record the fit never saw needs the clusters' signatures, "
                               f"saved in {folder}, which cannot be read ({error})") from None

    def __getstate__(self) -> dict[str, Any]:
        state = {**self.__dict__, "_keys": None}  # computed again where needed: cheaper than sending them
        if self.saved is not None:
            state.update(_signatures=None, _words=None)
        return state


def _merged_sets(parts: list[dict[int, np.ndarray]]) -> dict[int, np.ndarray]:
    out: dict[int, np.ndarray] = {}
    for part in parts:
        for key, value in part.items():
            out.setdefault(key, value)
    return out


def _cluster_ids(generations: np.ndarray, contents: np.ndarray) -> list[str]:
    """A short stable id per cluster from its representative content's generation and key (a hash: no text)."""
    blake2b = hashlib.blake2b
    return [blake2b(b"%d/%016x" % pair, digest_size=6).hexdigest()
            for pair in zip(generations.tolist(), contents.tolist())]


__all__ = ["NearDuplicates", "repetition_score"]
