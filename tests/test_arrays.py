"""Array helpers of the hot paths: they must give what the plain numpy calls give."""

import numpy as np
import pytest

from dokumi.arrays import distinct, first_of_pairs, lookup


@pytest.mark.parametrize("dtype", [np.uint64, np.int64])
@pytest.mark.parametrize("sizes", [(40, 5_000), (3_000, 60_000), (9_000, 20_000), (20_000, 50_000)])
def test_lookup_finds_exactly_the_keys_present_and_where(dtype, sizes):
    wanted, asked = sizes
    rng = np.random.default_rng(sum(sizes))
    pool = rng.integers(-2**62, 2**62, wanted * 4).astype(dtype)
    sorted_keys = distinct(pool[:wanted])
    keys = np.concatenate([rng.choice(pool, asked), sorted_keys[:3]])
    # keys that share a 16-bit slice with a wanted key but are not wanted
    keys[:50] = (sorted_keys[rng.integers(0, len(sorted_keys), 50)].view(np.uint64) ^ np.uint64(1 << 40)).view(dtype)
    found, where = lookup(sorted_keys, keys)
    assert found.tolist() == np.isin(keys, sorted_keys).tolist()
    assert (sorted_keys[where[found]] == keys[found]).all()
    assert found.sum() > 0 and (~found).sum() > 0


def test_lookup_of_nothing_and_in_nothing():
    found, where = lookup(np.zeros(0, np.uint64), np.arange(5, dtype=np.uint64))
    assert not found.any() and len(where) == 5
    assert len(lookup(np.arange(5, dtype=np.uint64), np.zeros(0, np.uint64))[0]) == 0


def test_first_of_pairs_is_each_pair_once_in_order():
    owner = np.array([0, 0, 1, 0, 1, 2, 2])
    values = np.array([5, 5, 5, 7, 5, 9, 9], dtype=np.uint64)
    assert first_of_pairs(owner, values).tolist() == [0, 2, 3, 5]


def test_lookup_with_repeated_sorted_keys_still_finds_them():
    sorted_keys = np.repeat(np.arange(0, 40_000, 2, dtype=np.int64), 2)  # each key twice
    keys = np.arange(40_000, dtype=np.int64)
    found, where = lookup(sorted_keys, keys)
    assert found.tolist() == (keys % 2 == 0).tolist()
    assert (sorted_keys[where[found]] == keys[found]).all()
