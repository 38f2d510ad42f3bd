"""Merkle trees: RFC 6962 / RFC 9162 roots and inclusion proofs, checked against published vectors."""

from __future__ import annotations

import hashlib
import random

import pytest

from dokumi.merkle import (
    EMPTY_ROOT,
    MerkleBuilder,
    inclusion_path,
    leaf_hash,
    merkle_root,
    node_hash,
    record_leaf,
    record_leaves,
    root_from_path,
    shard_leaf,
)

# Certificate Transparency's reference test vectors (RFC 6962 implementations share them).
CT_LEAVES = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
             b"\x50\x51\x52\x53\x54\x55\x56\x57", bytes(range(0x60, 0x70))]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_PROOFS = [  # (leaf index, tree size, audit path)
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]


def reference_root(leaves: list[bytes]) -> bytes:
    """MTH straight from the RFC 6962 recursion, to compare the streaming builder with."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(reference_root(leaves[:k]), reference_root(leaves[k:]))


@pytest.mark.parametrize("size", range(len(CT_ROOTS)))
def test_roots_match_the_certificate_transparency_vectors(size):
    assert merkle_root([leaf_hash(d) for d in CT_LEAVES[:size]]).hex() == CT_ROOTS[size]


def test_empty_tree_root_is_sha256_of_nothing():
    assert EMPTY_ROOT.hex() == CT_ROOTS[0] and MerkleBuilder().root() == EMPTY_ROOT


@pytest.mark.parametrize(("index", "size", "path"), CT_PROOFS)
def test_inclusion_paths_match_the_published_proofs(index, size, path):
    leaves = [leaf_hash(d) for d in CT_LEAVES[:size]]
    assert [node.hex() for node in inclusion_path(leaves, index)] == path
    assert root_from_path(leaves[index], index, size, [bytes.fromhex(p) for p in path]).hex() == CT_ROOTS[size]


def test_streaming_builder_equals_the_recursive_definition_for_every_size():
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(70)]
    for size in range(71):
        assert merkle_root(leaves[:size]) == reference_root(leaves[:size]), size


def test_every_proof_verifies_and_a_wrong_leaf_index_or_size_does_not():
    leaves = [leaf_hash(bytes([i])) for i in range(23)]
    for size in range(1, 24):
        root = merkle_root(leaves[:size])
        for index in range(size):
            path = inclusion_path(leaves[:size], index)
            assert root_from_path(leaves[index], index, size, path) == root
            assert root_from_path(leaf_hash(b"other"), index, size, path) != root
            if size > 1:
                assert root_from_path(leaves[index], (index + 1) % size, size, path) != root
        assert root_from_path(leaves[0], size, size, []) is None


def test_a_tampered_path_node_breaks_the_proof():
    rng = random.Random(3)
    leaves = [leaf_hash(rng.randbytes(8)) for _ in range(37)]
    root = merkle_root(leaves)
    path = inclusion_path(leaves, 20)
    for position in range(len(path)):
        broken = list(path)
        broken[position] = bytes(32)
        assert root_from_path(leaves[20], 20, 37, broken) != root


def test_record_leaves_bind_the_id_and_row_to_the_content_hash():
    digest = hashlib.sha256(b"text").digest()
    assert record_leaf("a", 0, digest) != record_leaf("b", 0, digest)
    assert record_leaf("a", 0, digest) != record_leaf("a", 1, digest)
    assert record_leaf("a", 0, digest) != record_leaf("a", 0, hashlib.sha256(b"other").digest())
    # netstrings keep the id, the row and the digest apart: no id can run into the row or the digest bytes
    assert record_leaf("1", 2, digest) != record_leaf("1" + digest[:1].decode("latin-1"), 2, digest)
    assert record_leaf("1:2,", 3, digest) != record_leaf("1", 23, digest)
    assert record_leaves(["a", "b"], [0, 5], digest + digest) == [record_leaf("a", 0, digest),
                                                                  record_leaf("b", 5, digest)]
    assert shard_leaf("part-0", digest) != shard_leaf("part-1", digest)
