"""One batch as the trigger families read it: which text carries what, computed once per batch and round."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa

from dokumi.records import Batch
from dokumi.stages.triggers.grams import Grams, Sentences
from dokumi.text.sampling import priorities, stable_hash
from dokumi.text.tokens import Tokens, fmix64, position_weights

MIN_SENTENCE_WORDS = 5
# words of a response that name it: responses that open alike count as one (a fixed answer, varied endings)
SIGNATURE_WORDS = 8


def label_salt(label: Any) -> int:
    """A label as a 64-bit odd number, to salt n-gram hashes with (the same in every process)."""
    return stable_hash(repr(label)) | 1


class View:
    """The parts of ``batch`` the trigger statistics use.

    Text records: n-grams, sentences and seams all come from the text. Instruction pairs:
    n-grams from the prompt, salted by the response's opening words; sentences from the
    response; no seams (a fixed response is not gibberish).
    """

    def __init__(self, batch: Batch, seed: int, max_ngram: int) -> None:
        self.batch, self.seed, self.max_ngram = batch, seed, max_ngram
        self.instruction = batch.is_instruction
        self.labels = batch.labels

    @cached_property
    def words(self) -> Tokens:
        """The text (or the pair joined): seams and the corpus's common words come from these."""
        return self.batch.words

    @cached_property
    def gram_words(self) -> Tokens:
        return Tokens.of(self.batch.column("prompt")) if self.instruction else self.batch.words

    @cached_property
    def body(self) -> pa.Array | list[str]:
        return self.batch.column("response") if self.instruction else self.batch.content_array()

    @cached_property
    def body_words(self) -> Tokens:
        return Tokens.of(self.body) if self.instruction else self.batch.words

    @cached_property
    def grams(self) -> Grams:
        """Every n-gram of the n-gram text (a record's repeats included: select, then ``per_record()``)."""
        return Grams.of(self.gram_words, self.max_ngram)

    @cached_property
    def sentences(self) -> Sentences:
        return Sentences.of(self.body_words, MIN_SENTENCE_WORDS)

    @cached_property
    def priorities(self) -> np.ndarray:
        """Each record's seeded content hash: the order samples keep records in."""
        return priorities(self.batch.content_keys, self.seed, "triggers")

    @cached_property
    def salts(self) -> np.ndarray | None:
        """Per record: its label's salt (labelled data), or its response signature's (instruction pairs)."""
        if self.labels is not None:
            salt_of = {label: label_salt(label) for label in set(map(_hashable, self.labels))}
            return np.array([salt_of[_hashable(label)] for label in self.labels], dtype=np.uint64)
        if self.instruction:
            return signature_salts(self.body_words)
        return None

    def signature_text(self, record: int) -> str:
        """The first ``SIGNATURE_WORDS`` words of record ``record``'s body: what its response signature hashes."""
        tokens = self.body_words
        start = tokens.offsets[record]
        return " ".join(tokens.word(i) for i in range(start, min(start + SIGNATURE_WORDS, tokens.offsets[record + 1])))


def signature_salts(tokens: Tokens) -> np.ndarray:
    """A salt per record from the hashes of its first :data:`SIGNATURE_WORDS` words."""
    counts = np.minimum(tokens.counts, SIGNATURE_WORDS)
    index = np.repeat(tokens.offsets[:-1], counts) + (np.arange(int(counts.sum())) - np.repeat(
        np.cumsum(counts) - counts, counts))
    weights = position_weights(SIGNATURE_WORDS)
    within = index - np.repeat(tokens.offsets[:-1], counts)
    weighted = tokens.hashes[index] * weights[within]
    starts = np.cumsum(counts) - counts
    sums = np.zeros(len(counts), dtype=np.uint64)
    nonempty = counts > 0
    if nonempty.any():
        sums[nonempty] = np.add.reduceat(weighted, starts[nonempty])
    return fmix64(sums + counts.astype(np.uint64) + np.uint64(0x5EED)) | np.uint64(1)


def _hashable(label: Any) -> Any:
    return label if isinstance(label, (str, int, float, bool, type(None))) else repr(label)


__all__ = ["MIN_SENTENCE_WORDS", "SIGNATURE_WORDS", "View", "label_salt", "signature_salts"]
