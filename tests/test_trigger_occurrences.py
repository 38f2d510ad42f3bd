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
    assert [token for token, _ in found.groups(only=np.array([2, 9], dtype=np.uint64))] == [2]
    assert [columns["pair"].tolist() for _, columns in found.groups(only=np.array([1], dtype=np.uint64))] == [[0, 1, 2]]
    assert Occurrences.merged([Occurrences(10), found]).distinct_records() == {1: 2, 2: 1}
    assert Occurrences.merged([Occurrences(10)]).distinct_records() == {}
    assert list(Occurrences(10).groups()) == []


def test_rank_in_runs_numbers_each_element_within_its_run_of_equal_values():
    from dokumi.arrays import rank_in_runs

    assert rank_in_runs(np.array([3, 3, 3, 5, 7, 7], dtype=np.uint64)).tolist() == [0, 1, 2, 0, 0, 1]
    assert rank_in_runs(np.zeros(0, dtype=np.int32)).tolist() == []


def test_a_ragged_payload_stays_with_its_occurrence_whatever_the_partitioning(monkeypatch):
    from dokumi.stages.triggers.occurrences import Ragged

    monkeypatch.setattr(occurrences, "_COMPACT_ROWS", 16)
    rows = _rows(300, seed=2)
    rng = np.random.default_rng(2)
    lengths = rng.integers(0, 5, 300).astype(np.uint8)  # empty rows among them
    segments = [rng.integers(0, 1000, int(n)).astype(np.uint32) for n in lengths]

    def fold(pieces: list[slice]) -> list[tuple[int, list[int], list[list[int]]]]:
        parts = []
        for piece in pieces:
            part = Occurrences(6)
            for start in range(piece.start, piece.stop, 7):
                batch = range(start, min(start + 7, piece.stop))
                ragged = Ragged.of(lengths[start:batch.stop], np.concatenate([segments[i] for i in batch]))
                part.add(rows["token"][start:batch.stop], rows["record"][start:batch.stop],
                         rows["priority"][start:batch.stop], after=ragged)
            parts.append(part)
        found = Occurrences.merged(parts)
        kept = []
        for token, columns in found.groups():
            owner, values = columns["after"].flat()
            kept.append((token, columns["record"].tolist(),
                         [values[owner == row].tolist() for row in range(len(columns["record"]))]))
        return kept

    whole = fold([slice(0, 300)])
    assert fold([slice(0, 90), slice(90, 250), slice(250, 300)]) == whole
    for _, records, after in whole:
        for record, segment in zip(records, after):
            i = int(np.flatnonzero(rows["record"] == record)[0])
            assert segment == segments[i].tolist()  # each segment travelled with its own occurrence


def test_ragged_rows_take_compact_and_slice():
    from dokumi.stages.triggers.occurrences import Ragged

    column = Ragged.of(np.array([2, 0, 3, 1], dtype=np.uint8), np.arange(6) * 10)
    assert column.flat()[0].tolist() == [0, 0, 2, 2, 2, 3]
    taken = column.take(np.array([3, 0, 1]))
    rows, values = taken.flat()
    assert taken.lengths.tolist() == [1, 2, 0] and values.tolist() == [50, 0, 10] and rows.tolist() == [0, 1, 1]
    compact = taken.compact()
    assert compact.values.tolist() == [0, 10, 50]  # the values no row points to are gone, the order kept
    assert [r.tolist() for r in compact.flat()] == [r.tolist() for r in taken.flat()]
    middle = column.slicer()(1, 3)
    assert middle.flat()[1].tolist() == [20, 30, 40]
    joined = Ragged.concatenate([taken, column.take(np.array([2]))]).compact()
    assert joined.flat()[1].tolist() == [50, 0, 10, 20, 30, 40]
    assert column.take(np.zeros(0, dtype=np.int64)).compact().values.tolist() == []


def test_recurring_after_keeps_each_window_size_and_the_places_of_its_recurring_pairs():
    from dokumi.stages.triggers.seams import recurring_after

    recurring = np.array([10, 20, 30, 40], dtype=np.uint64)
    after = np.array([[20, 11, 40, 20, 0, 0],  # 20 twice: each occurrence counts
                      [0, 0, 0, 0, 0, 0],
                      [12, 13, 0, 0, 0, 0],
                      [10, 30, 30, 99, 40, 10]], dtype=np.uint64)
    sizes, places = recurring_after(after, recurring)
    assert sizes.tolist() == [4, 0, 2, 6]
    assert places.lengths.tolist() == [3, 0, 0, 5]
    assert recurring[places.flat()[1]].tolist() == [20, 40, 20, 10, 30, 30, 40, 10]


def test_seams_by_record_keep_a_record_once_per_token_whatever_the_partitioning():
    """The seams found by record (the trigger fit's round 2): unbounded, a record's copies once."""
    import pickle

    from dokumi.stages.triggers.occurrences import UNBOUNDED

    rng = np.random.default_rng(4)
    record = rng.integers(1, 40, 200).astype(np.uint64)  # many copies of 39 records
    token = rng.integers(0, 5, 200).astype(np.uint64)
    # a record's copies find the same seams: kind and bin are functions of (record, token)
    kind = ((record + token) % np.uint64(2)).astype(np.int8)
    coverage_bin = ((record * token) % np.uint64(41)).astype(np.int8)
    expected = sorted(set(zip(token.tolist(), record.tolist(), kind.tolist(), coverage_bin.tolist())))

    def fold(pieces: list[slice]) -> list[tuple[int, int, int, int]]:
        parts = []
        for piece in pieces:
            part = Occurrences(UNBOUNDED, distinct=True)
            for start in range(piece.start, piece.stop, 9):
                end = min(start + 9, piece.stop)
                part.add(token[start:end], record[start:end], record[start:end], kind=kind[start:end],
                         coverage_bin=coverage_bin[start:end])
            parts.append(pickle.loads(pickle.dumps(part)))
        columns = Occurrences.merged(parts).columns()
        return list(zip(*(columns[name].tolist() for name in ("token", "record", "kind", "coverage_bin"))))

    assert fold([slice(0, 200)]) == expected  # by token, then record
    assert fold([slice(0, 50), slice(50, 130), slice(130, 200)]) == expected
    assert Occurrences(UNBOUNDED, distinct=True).columns() == {}


def test_sentence_samples_as_columns_hold_what_the_heaps_held():
    """A partition's heaps, settled into columns when pickled and merged, give each sentence the same records'
    words in the same order as merging the heaps would."""
    import pickle

    from dokumi.stages.triggers.sentences import REST_SAMPLE, SentenceHits
    from dokumi.text.sampling import BottomK

    rng = np.random.default_rng(9)
    offers = [(int(rng.integers(0, 3)), int(rng.integers(1, 500)), rng.integers(0, 2**63, int(rng.integers(0, 6)),
                                                                             dtype=np.uint64))
              for _ in range(900)]
    words_of = {}  # copies of a record (one priority) carry the same words
    offers = [(key, priority, words_of.setdefault(priority, np.unique(words))) for key, priority, words in offers]
    parts, heaps = [], {}
    for piece in (offers[:300], offers[300:700], offers[700:]):
        part = SentenceHits()
        for key, priority, words in piece:
            part.text[key] = f"sentence {key}"
            part.rest.setdefault(key, BottomK(REST_SAMPLE)).offer(priority, words)
            heaps.setdefault(key, BottomK(REST_SAMPLE)).offer(priority, words)
        parts.append(pickle.loads(pickle.dumps(part)))
    merged = SentenceHits.merged(parts)
    for key, heap in heaps.items():
        assert [w.tolist() for w in merged.rests(key)] == [w.tolist() for w in heap.items()]
    assert merged.rests(99) == []
