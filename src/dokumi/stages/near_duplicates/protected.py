"""The protected set: documents (evaluation sets, confidential text) whose near-duplicates must not pass.

Its signatures and band keys are built at setup from the ``protect`` side
input, before the corpus is read; a record matches when it shares a band key
with a protected document and passes the stage's similarity check.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from dokumi.lsh import band_keys, cross_matches
from dokumi.minhash import MinHasher
from dokumi.records import Batch
from dokumi.stages.near_duplicates.signed import sign


@dataclass
class ProtectedSet:
    """Signatures and LSH band keys of the protected documents that have words."""

    signatures: np.ndarray
    keys: np.ndarray

    @classmethod
    def of(cls, batches: Iterable[Batch], hasher: MinHasher, bands: int, rows: int) -> ProtectedSet:
        """MinHash signatures and band keys of the protected documents in ``batches``."""
        blocks = [sign(hasher, batch)[1] for batch in batches if batch.num_rows]
        signatures = np.concatenate(blocks) if blocks else np.zeros((0, hasher.num_perm), np.uint32)
        return cls(signatures, band_keys(signatures, bands, rows))

    def __len__(self) -> int:
        return len(self.signatures)

    def matches(self, signatures: np.ndarray, keys: np.ndarray, jaccard: float | None) -> np.ndarray:
        """Which of the records (their signatures and band keys) near-duplicate a protected document.

        ``jaccard`` None accepts every band collision (``verify = "off"``).
        """
        found = np.zeros(len(signatures), dtype=bool)
        if not len(self) or not len(signatures):
            return found
        similar = None
        if jaccard is not None:
            def similar(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
                return (signatures[query] == self.signatures[reference]).mean(axis=1) >= jaccard
        matched, _ = cross_matches(keys, self.keys, similar)
        found[matched] = True
        return found


__all__ = ["ProtectedSet"]
