"""The trigger fit's occurrences for the driver's second look: bounded per token, the same for any partitioning."""

import numpy as np

from dokumi.stages.triggers import occurrences
from dokumi.stages.triggers.occurrences import Occurrences


def _rows(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    record = rng.integers(1, 2**63, n, dtype=np.uint64)
    return {"token": rng.integers(0, 4, n).astype(np.uint64), "record": record,
            "priority": record * np.uint64(0x9E3779B97F4A7C15),  # a function of the content, as in the stage
            "after": rng.integers(0, 2**63, (n, 3), dtype=np.uint64)}


def _fold(rows: dict[str, np.ndarray], pieces: list[slice], limit: int) -> Occurrences:
    parts = []
    for piece in pieces:
        part = Occurrences(limit)
        for start in range(piece.start, piece.stop, 7):  # batches of 7 rows
            batch = slice(start, min(start + 7, piece.stop))
            part.add(rows["token"][batch], rows["record"][batch], rows["priority"][batch],
                     after=rows["after"][batch])
        parts.append(part)
    return Occurrences.merged(parts)


def _kept(found: Occurrences) -> list[tuple[int, list[int], list[list[int]]]]:
    return [(token, columns["record"].tolist(), columns["after"].tolist()) for token, columns in found.groups()]


def test_each_token_keeps_its_lowest_priority_occurrences_with_their_payload():
    rows = _rows(200)
    kept = _kept(_fold(rows, [slice(0, 200)], limit=5))
    assert [token for token, _, _ in kept] == [0, 1, 2, 3]
    for token, records, after in kept:
        mine = np.flatnonzero(rows["token"] == token)
        lowest = mine[np.argsort(rows["priority"][mine], kind="stable")[:5]]
        assert records == rows["record"][lowest].tolist()
        assert after == rows["after"][lowest].tolist()  # each payload row stays with its occurrence


def test_the_same_occurrences_are_kept_whatever_the_partitioning_and_order(monkeypatch):
    monkeypatch.setattr(occurrences, "_COMPACT_ROWS", 16)  # bound while reading, not only when merged
    rows = _rows(300, seed=1)
    whole = _kept(_fold(rows, [slice(0, 300)], limit=6))
    assert _kept(_fold(rows, [slice(0, 100), slice(100, 180), slice(180, 300)], limit=6)) == whole
    reversed_rows = {name: column[::-1].copy() for name, column in rows.items()}
    assert _kept(_fold(reversed_rows, [slice(0, 150), slice(150, 300)], limit=6)) == whole
    # a merge of many partitions holds what one would, not the bound times the partitions
    assert sum(len(records) for _, records, _ in whole) == 4 * 6


def test_distinct_records_counts_copies_of_a_record_once():
    found = Occurrences(10)
    record = np.array([5, 5, 6, 7, 7, 7], dtype=np.uint64)  # copies of records 5 and 7
    found.add(np.array([1, 1, 1, 2, 2, 2], dtype=np.uint64), record, record * np.uint64(3), pair=np.arange(6))
    assert found.distinct_records() == {1: 2, 2: 1}
    assert Occurrences.merged([Occurrences(10), found]).distinct_records() == {1: 2, 2: 1}
    assert Occurrences.merged([Occurrences(10)]).distinct_records() == {}
    assert list(Occurrences(10).groups()) == []


def test_rank_in_runs_numbers_each_element_within_its_run_of_equal_values():
    from dokumi.arrays import rank_in_runs

    assert rank_in_runs(np.array([3, 3, 3, 5, 7, 7], dtype=np.uint64)).tolist() == [0, 1, 2, 0, 0, 1]
    assert rank_in_runs(np.zeros(0, dtype=np.int32)).tolist() == []
