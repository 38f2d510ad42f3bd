"""Merkle trees over record hashes, as in Certificate Transparency (RFC 6962 / RFC 9162, SHA-256).

Leaf hash ``SHA-256(0x00 || data)``, interior node ``SHA-256(0x01 || left || right)``;
a tree of ``n`` leaves splits at the largest power of two below ``n``; the
empty tree's root is ``SHA-256("")``. Any RFC 9162 verifier checks dokumi's
inclusion proofs.

dokumi builds one tree per shard whose leaf data are
``netstring(record id) || netstring(row) || sha256(record)`` in row order
(``row``: the record's 0-based row in its shard, in decimal), and one tree for
the corpus whose leaf data are ``netstring(shard name) || shard root`` in input
order. Binding the id and the row makes a proof say "this id, at this row, had
this content".
"""

from __future__ import annotations

import hashlib

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()
ALGORITHM = "rfc9162-sha256"


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 leaf hash: ``sha256(0x00 || data)``."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: ``sha256(0x01 || left || right)``."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _netstring(data: bytes) -> bytes:
    return b"%d:%s," % (len(data), data)


def record_leaf(record_id: str, row: int, digest: bytes) -> bytes:
    """Leaf hash of one record: its id and row in the shard bound to its content hash."""
    return leaf_hash(_netstring(record_id.encode("utf-8")) + _netstring(b"%d" % row) + digest)


def shard_leaf(shard_name: str, shard_root: bytes) -> bytes:
    """Leaf hash of one shard in the corpus tree."""
    return leaf_hash(_netstring(shard_name.encode("utf-8")) + shard_root)


class MerkleBuilder:
    """The root of a growing tree in O(log n) memory: leaves are appended one at a time.

    Keeps the roots of the perfect subtrees seen so far (sizes are decreasing
    powers of two); folding them from the right gives the RFC 6962 root.
    """

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[tuple[int, bytes]] = []

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash, merging complete subtrees as they form (memory: log2 of the leaves)."""
        size, node = 1, leaf
        while self._stack and self._stack[-1][0] == size:
            left_size, left = self._stack.pop()
            size, node = left_size + size, node_hash(left, node)
        self._stack.append((size, node))
        self.size += 1

    def extend(self, leaves: list[bytes]) -> None:
        """Add ``leaves`` in order."""
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        """The root over the leaves added so far (``EMPTY_ROOT`` when none)."""
        if not self._stack:
            return EMPTY_ROOT
        node = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            node = node_hash(left, node)
        return node


def merkle_root(leaves: list[bytes]) -> bytes:
    """Root of the tree over ``leaves`` (leaf hashes)."""
    builder = MerkleBuilder()
    builder.extend(leaves)
    return builder.root()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_path(leaves: list[bytes], index: int) -> list[bytes]:
    """The audit path of leaf ``index`` (RFC 9162 2.1.3.1), ordered from the leaf up."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf index {index} outside a tree of {len(leaves)} leaves")
    path = []
    low, high = 0, len(leaves)
    while high - low > 1:
        middle = low + _split(high - low)
        if index < middle:
            path.append(merkle_root(leaves[middle:high]))
            high = middle
        else:
            path.append(merkle_root(leaves[low:middle]))
            low = middle
    return path[::-1]


def root_from_path(leaf: bytes, index: int, size: int, path: list[bytes]) -> bytes | None:
    """The root that ``path`` proves ``leaf`` (at ``index`` of ``size``) belongs to; None when the
    path cannot belong to a tree of that size (RFC 9162 2.1.3.2)."""
    if not 0 <= index < size:
        return None
    position, last = index, size - 1
    node = leaf
    for sibling in path:
        if last == 0:
            return None
        if position & 1 or position == last:
            node = node_hash(sibling, node)
            if not position & 1:
                while not position & 1 and position != 0:
                    position >>= 1
                    last >>= 1
        else:
            node = node_hash(node, sibling)
        position >>= 1
        last >>= 1
    return node if last == 0 else None


def record_leaves(ids: list[str], rows: list[int], digests: bytes) -> list[bytes]:
    """Leaf hashes of a batch: ``ids[i]`` at ``rows[i]`` bound to the i-th 32-byte digest of ``digests``."""
    return [record_leaf(record_id, row, digests[32 * i:32 * i + 32])
            for i, (record_id, row) in enumerate(zip(ids, rows))]
