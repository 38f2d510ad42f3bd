"""LSH primitives: band parameters, keys, candidate pairs, checks and deterministic clusters."""

from __future__ import annotations

import numpy as np
import pytest

from dokumi.lsh import (
    band_keys,
    band_parameters,
    bucket_edges,
    cluster,
    connected_components,
    cross_matches,
    estimated_jaccard,
    exact_jaccard,
)


def _planted(rng: np.random.Generator, groups: list[int], singles: int, num_perm: int = 64):
    """Signatures of groups of near-identical records (a few values changed) plus unrelated records."""
    signatures, truth = [], []
    for group, size in enumerate(groups):
        base = rng.integers(0, 2**32, num_perm, dtype=np.uint32)
        for _ in range(size):
            copy = base.copy()
            copy[rng.choice(num_perm, 4, replace=False)] = rng.integers(0, 2**32, 4, dtype=np.uint32)
            signatures.append(copy)
            truth.append(group)
    for single in range(singles):
        signatures.append(rng.integers(0, 2**32, num_perm, dtype=np.uint32))
        truth.append(len(groups) + single)
    return np.array(signatures), np.array(truth)


def _partition(labels: np.ndarray) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for node, label in enumerate(labels.tolist()):
        groups.setdefault(label, set()).add(node)
    return {frozenset(g) for g in groups.values()}


def test_band_parameters_fit_the_signature_and_follow_the_threshold():
    loose, strict = band_parameters(0.3, 128), band_parameters(0.8, 128)
    for bands, rows in (loose, strict):
        assert bands * rows <= 128
    # a higher threshold needs more rows per band (harder to collide) and fewer bands
    assert strict[1] > loose[1] and strict[0] < loose[0]


def test_band_keys_change_only_in_the_band_that_changed():
    rng = np.random.default_rng(0)
    signatures = rng.integers(0, 2**32, (2, 20), dtype=np.uint32)
    signatures[1] = signatures[0]
    signatures[1, 7] += 1  # band 1 of 4 bands x 5 rows
    keys = band_keys(signatures, bands=4, rows=5)
    assert keys.dtype == np.uint64
    assert (keys[0] == keys[1]).tolist() == [True, False, True, True]
    with pytest.raises(ValueError, match="signature values"):
        band_keys(signatures, bands=5, rows=5)


def test_bucket_edges_link_members_to_the_lowest_rank_member():
    keys = np.array([5, 9, 5, 5, 9, 1], dtype=np.uint64)
    rank = np.array([3, 1, 0, 5, 2, 4])
    heads, members, _, _ = bucket_edges(keys, np.argsort(rank))
    edges = set(zip(heads.tolist(), members.tolist()))
    assert edges == {(2, 0), (2, 3), (1, 4)}  # node 2 has the lowest rank in bucket 5, node 1 in bucket 9


def test_connected_components_label_by_lowest_rank_not_lowest_index():
    left, right = np.array([0, 1, 4]), np.array([1, 2, 5])
    rank = np.array([2, 0, 1, 3, 5, 4])
    labels = connected_components(6, left, right, rank)
    assert labels.tolist() == [1, 1, 1, 3, 5, 5]


def test_cluster_finds_planted_groups():
    rng = np.random.default_rng(1)
    signatures, truth = _planted(rng, groups=[30, 5, 2], singles=200)
    keys = band_keys(signatures, *band_parameters(0.5, 64))
    labels = cluster(keys, np.arange(len(signatures)),
                     lambda a, b: estimated_jaccard(signatures, a, b) >= 0.5)
    assert _partition(labels) == _partition(truth)


def test_cluster_is_the_same_for_any_node_order():
    rng = np.random.default_rng(2)
    signatures, _ = _planted(rng, groups=[20, 8, 3, 3], singles=100)
    keys = band_keys(signatures, *band_parameters(0.5, 64))

    def run(permutation: np.ndarray) -> list[int]:
        # node i of the permuted run is record permutation[i]; ranks follow the records
        sigs = signatures[permutation]
        labels = cluster(keys[permutation], permutation.copy(), lambda a, b: estimated_jaccard(sigs, a, b) >= 0.5)
        return permutation[labels][np.argsort(permutation)].tolist()  # each record's representative record

    identity = run(np.arange(len(signatures)))
    for seed in range(3):
        assert run(np.random.default_rng(seed).permutation(len(signatures))) == identity


def test_a_member_failing_the_head_is_linked_through_another_member():
    # all three share band keys; the head (rank 0) is dissimilar to node 2, node 1 is similar to both
    keys = np.zeros((3, 1), dtype=np.uint64)
    similar_pairs = {frozenset((0, 1)), frozenset((1, 2))}

    def similar(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.array([frozenset((x, y)) in similar_pairs for x, y in zip(a.tolist(), b.tolist())])

    assert cluster(keys, np.arange(3), similar).tolist() == [0, 0, 0]
    assert cluster(keys, np.arange(3), lambda a, b: np.zeros(len(a), dtype=bool)).tolist() == [0, 1, 2]


def test_cross_matches_find_queries_near_a_reference():
    rng = np.random.default_rng(4)
    references, _ = _planted(rng, groups=[], singles=5)
    queries = rng.integers(0, 2**32, (6, 64), dtype=np.uint32)
    queries[2] = references[3]
    queries[4] = references[0]
    queries[4, :3] += 1
    params = band_parameters(0.5, 64)
    matched, matched_to = cross_matches(band_keys(queries, *params), band_keys(references, *params),
                                        lambda q, r: (queries[q] == references[r]).mean(axis=1) >= 0.5)
    assert dict(zip(matched.tolist(), matched_to.tolist())) == {2: 3, 4: 0}


def test_similarity_estimates():
    signatures = np.array([[1, 2, 3, 4], [1, 2, 0, 0], [9, 9, 9, 9]], dtype=np.uint32)
    assert estimated_jaccard(signatures, np.array([0, 0]), np.array([1, 2])).tolist() == [0.5, 0.0]
    assert exact_jaccard(np.array([1, 2, 3]), np.array([2, 3, 4])) == 0.5
    assert exact_jaccard(np.array([]), np.array([])) == 1.0


def test_cluster_labels_are_the_components_of_every_accepted_link():
    """Bands link clusters one band at a time; the labels must be the lowest-rank node of each connected
    component of all links accepted in all bands (computed here from scratch after every band)."""
    from dokumi.lsh import _fallback, bucket_edges, cluster, connected_components

    rng = np.random.default_rng(5)
    n, bands = 3_000, 6
    keys = rng.integers(0, 2_500, (n, bands)).astype(np.uint64)  # collisions in every band
    rank = rng.permutation(n)
    signature = rng.integers(0, 2, (n, 6))

    def similar(left, right):
        return (signature[left] == signature[right]).mean(axis=1) >= 0.8

    order = np.argsort(rank, kind="stable")
    labels, lefts, rights = np.arange(n), [], []
    for band in range(bands):
        heads, members, sorted_nodes, start = bucket_edges(keys[:, band], order)
        pending = labels[heads] != labels[members]
        heads, members, start = heads[pending], members[pending], start[pending]
        passed = similar(heads, members)
        lefts.append(heads[passed])
        rights.append(members[passed])
        left, right = _fallback(members[~passed], start[~passed], sorted_nodes, keys[:, band], similar)
        lefts.append(left)
        rights.append(right)
        labels = connected_components(n, np.concatenate(lefts), np.concatenate(rights), rank)
    got = cluster(keys, rank, similar)
    assert got.tolist() == labels.tolist()
    assert 10 < len(np.unique(got)) < n  # clusters formed, and not one


def test_fallback_links_each_failed_member_to_the_first_bucket_mate_it_passes():
    """Checked against the plain reading of the rule, member by member."""
    from dokumi.lsh import FALLBACK_CANDIDATES, _fallback, bucket_edges

    rng = np.random.default_rng(11)
    n = 4_000
    keys = rng.integers(0, 60, n).astype(np.uint64)  # buckets of about 67 nodes: longer than the window
    rank = rng.permutation(n)
    signature = rng.integers(0, 2, (n, 6))  # one pair in 64 passes: the whole window often matters

    def similar(left, right):
        return (signature[left] == signature[right]).all(axis=1)

    heads, members, sorted_nodes, start = bucket_edges(keys, np.argsort(rank, kind="stable"))
    failed = ~similar(heads, members)
    got = _fallback(members[failed], start[failed], sorted_nodes, keys, similar)
    expected_left, expected_right = [], []
    for member, begin in zip(members[failed].tolist(), start[failed].tolist()):
        window = [int(node) for node in sorted_nodes[begin + 1: begin + 1 + FALLBACK_CANDIDATES]
                  if keys[node] == keys[member] and node != member]
        passing = [node for node in window if similar(np.array([node]), np.array([member]))[0]]
        if passing:
            expected_left.append(passing[0])
            expected_right.append(member)
    assert got[0].tolist() == expected_left and got[1].tolist() == expected_right
    assert 100 < len(expected_left) < failed.sum()  # some members link, some find no mate


@pytest.mark.parametrize("dtype, high", [(np.int32, 40), (np.int64, 3), (np.uint64, 2**63), (np.int64, -1)])
def test_sorting_bucket_keys_keeps_equal_keys_in_order(dtype, high):
    """The fast path for small bucket numbers orders exactly as a stable sort; other keys take the stable sort."""
    from dokumi.lsh import _argsort_by_key_then_position

    rng = np.random.default_rng(1)
    if high < 0:
        keys = rng.integers(-5, 5, size=5000).astype(dtype)
    elif high > 2**62:
        keys = rng.integers(0, 2**63, size=5000, dtype=np.uint64) | np.uint64(2**63)
        keys[::3] = keys[0]  # ties among huge keys
    else:
        keys = rng.integers(0, high, size=5000).astype(dtype)
    assert np.array_equal(_argsort_by_key_then_position(keys), np.argsort(keys, kind="stable"))
