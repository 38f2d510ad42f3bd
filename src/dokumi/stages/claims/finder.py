"""Find claims repeated in many wordings: word pairs that many unrelated documents state together in a
sentence foreign to them.

The representation of a claim is the set of content words of a sentence
(:mod:`.sentences`); a claim reworded many times keeps a small core of them (the subject and the
key words of what is said about it) while its frame, verbs and modifiers change. Over the
*foreign* sentences of a sample (those unlike the rest of their document), every pair of
mid-frequency words is counted once per document, and a pair is a claim's when

1. it recurs in at least ``min_records`` documents, far more often than the two words' sentence
   frequencies predict (a Poisson tail, corrected for the pairs tested: ``significance``);
2. it is no fixed phrase: the words between the two (and their order) differ from sentence to
   sentence (an attribution "Lao Tse, Tao Te Ching" or "GNU General Public License" is one wording);
3. its sentences are reworded, not copied: their content words overlap little beyond the pair
   (near-identical sentences are the near-duplicates and triggers stages' evidence);
4. its documents are otherwise unrelated: the rest of each host document shares no more words with
   the other hosts than with documents drawn at random. Honest text states many facts in many
   wordings, but in documents about the same thing (Rust crates packaged for Debian, network
   servers); an inserted claim sits in documents about anything.

Claim pairs that share a word form one claim (every pair about "gzip"); a claim needs ``min_pairs``
of them (a claim reworded many times pairs its subject with several interchangeable words, an honest
collocation such as "solve a problem" is one pair). A document is the claim's when one of its foreign
sentences holds one of the claim's pairs.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import combinations

from scipy.stats import poisson

from dokumi.stages.claims.sentences import Sentence, parse

# sentences and hosts compared per pair (the first by sample order: bounded work per pair)
MAX_COMPARED = 40
# documents the host baseline compares each host with
BASELINE_DOCUMENTS = 400
# host words read per document (bounded for long documents)
MAX_HOST_WORDS = 400


def sentence_id(text: str) -> str:
    """A stable short id of a sentence's text: findings name wordings without their text."""
    return hashlib.sha1(" ".join(text.split()).encode("utf-8")).hexdigest()[:10]


def core_id(words: tuple[str, ...]) -> str:
    """A stable short id of a claim's core words (reason codes of a scan that keeps no text)."""
    return hashlib.sha1("\0".join(sorted(words)).encode("utf-8")).hexdigest()[:10]


@dataclass
class PairEvidence:
    """Why a word pair belongs to a claim (or not): counts and the four tests' values."""

    pair: tuple[str, str]
    records: int
    expected: float
    significance: float
    phrase_share: float
    sentence_similarity: float
    host_ratio: float
    wordings: int


@dataclass
class Claim:
    """One claim: its core words (most shared first), its pairs, and the documents that state it."""

    core: tuple[str, ...]
    pairs: frozenset[tuple[str, str]]
    records: int
    wordings: int
    significance: float
    host_ratio: float
    # a few of its wordings (text), by sample order
    examples: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        """A stable short id of the claim (a hash of its core words)."""
        return core_id(self.core)


@dataclass(frozen=True)
class ClaimMatch:
    """A document's evidence: the claim, the pairs its sentence holds, and that sentence's id."""

    claim: Claim
    pairs: int
    wording: str


def _jaccard(a: frozenset, b: frozenset) -> float:
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def _mean_jaccard(sets: list[frozenset]) -> float:
    scores = [_jaccard(a, b) for a, b in combinations(sets, 2)]
    return sum(scores) / len(scores) if scores else 0.0


class ClaimFinder:
    """Fit on a sample of documents; find claims; match documents to them."""

    def __init__(self, min_records: int = 8, max_share: float = 0.05, min_foreign: float = 0.5,
                 min_significance: float = 5.0, max_phrase_share: float = 0.5,
                 max_sentence_similarity: float = 0.5, max_host_ratio: float = 2.0, min_pairs: int = 3) -> None:
        self.min_records = min_records
        self.min_pairs = min_pairs
        self.max_share = max_share
        self.min_foreign = min_foreign
        self.min_significance = min_significance
        self.max_phrase_share = max_phrase_share
        self.max_sentence_similarity = max_sentence_similarity
        self.max_host_ratio = max_host_ratio

    # fitting ------------------------------------------------------------------

    def fit(self, texts: list[str]) -> ClaimFinder:
        """Find the claims of ``texts`` (a sample, in a fixed order); set ``claims_`` and ``tested_``."""
        documents = [parse(text, self.min_foreign) for text in texts]
        n = len(documents)
        frequency: Counter = Counter()
        for sentences in documents:
            frequency.update({word for sentence in sentences for word in sentence.words})
        # a claim's core words are neither rare nor everywhere (a word in 2 documents pairs with anything)
        ceiling = max(self.min_records, self.max_share * n)
        usable = {word for word, count in frequency.items() if 2 <= count <= ceiling}
        foreign: list[tuple[int, int, tuple[str, ...]]] = []  # (document, sentence, its usable words, sorted)
        in_foreign: Counter = Counter()
        for d, sentences in enumerate(documents):
            for s, sentence in enumerate(sentences):
                if sentence.foreign:
                    words = tuple(sorted(set(sentence.words) & usable))
                    foreign.append((d, s, words))
                    in_foreign.update(words)
        pair_documents: dict[tuple[str, str], set[int]] = defaultdict(set)
        for d, _, words in foreign:
            for pair in combinations(words, 2):
                pair_documents[pair].add(d)
        candidates = {pair: docs for pair, docs in pair_documents.items() if len(docs) >= self.min_records}
        del pair_documents
        self.tested_ = len(candidates)
        correction = math.log10(max(len(candidates), 1))
        occurrences: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
        for d, s, words in foreign:
            for pair in combinations(words, 2):
                if pair in candidates:
                    occurrences[pair].append((d, s))
        hosts: dict[tuple[int, int], tuple[frozenset, float]] = {}  # words, mean similarity to the baseline
        baseline = [self._host(documents[d], -1, usable) for d in range(0, n, max(1, n // BASELINE_DOCUMENTS))]
        baseline = [host for host in baseline if host]
        evidence: list[PairEvidence] = []
        for pair, docs in sorted(candidates.items()):
            count = len(docs)
            expected = in_foreign[pair[0]] * in_foreign[pair[1]] / max(len(foreign), 1)
            significance = -float(poisson.logsf(count - 1, expected)) / math.log(10) - correction
            if significance < self.min_significance:
                continue
            first: dict[int, int] = {}
            for d, s in occurrences[pair]:
                first.setdefault(d, s)
            places = sorted(first.items())
            phrase = self._phrase_share(pair, [documents[d][s] for d, s in places])
            if phrase > self.max_phrase_share:
                continue
            compared = places[:MAX_COMPARED]
            sets = [frozenset(documents[d][s].words) - set(pair) for d, s in compared]
            similarity = _mean_jaccard(sets)
            wordings = len({frozenset(documents[d][s].words) for d, s in places})
            for d, s in compared:
                if (d, s) not in hosts:
                    host = self._host(documents[d], s, usable)
                    at_random = sum(_jaccard(host, other) for other in baseline) / len(baseline) if baseline else 0.0
                    hosts[d, s] = (host, at_random)
            ratio = self._host_ratio([hosts[d, s] for d, s in compared])
            evidence.append(PairEvidence(pair, count, expected, significance, phrase, similarity, ratio, wordings))
        self.evidence_ = evidence
        kept = [e for e in evidence if e.sentence_similarity <= self.max_sentence_similarity
                and e.host_ratio <= self.max_host_ratio]
        self.claims_ = self._group(kept, occurrences, documents)
        self._index()
        return self

    def _host(self, sentences: list[Sentence], skip: int, usable: set[str]) -> frozenset:
        """The usable words of a document outside its sentence ``skip`` (bounded)."""
        words: set[str] = set()
        for s, sentence in enumerate(sentences):
            if s != skip:
                words.update(word for word in sentence.words if word in usable)
            if len(words) >= MAX_HOST_WORDS:
                break
        return frozenset(words)

    @staticmethod
    def _phrase_share(pair: tuple[str, str], sentences: list[Sentence]) -> float:
        """Share of the pair's sentences that hold its most common wording between the two words (order included)."""
        spans: Counter = Counter()
        for sentence in sentences:
            words = sentence.words
            a, b = words.index(pair[0]), words.index(pair[1])
            spans[a < b, words[min(a, b) + 1:max(a, b)]] += 1
        return spans.most_common(1)[0][1] / max(len(sentences), 1)

    @staticmethod
    def _host_ratio(hosts: list[tuple[frozenset, float]]) -> float:
        """How much more the hosts resemble each other than documents at random (1: unrelated), from each
        host's words and its mean similarity to the baseline documents.

        Infinite when too few hosts have a rest to compare (such a pair is no claim's: unproven)."""
        present = [(host, at_random) for host, at_random in hosts if host]
        if len(present) < max(3, len(hosts) // 2):
            return math.inf
        among = _mean_jaccard([host for host, _ in present])
        at_random = sum(value for _, value in present) / len(present)
        return among / at_random if at_random > 0 else (math.inf if among > 0 else 1.0)

    def _group(self, kept: list[PairEvidence], occurrences: dict, documents: list[list[Sentence]]) -> list[Claim]:
        """Claim pairs grouped into claims, strongest first: a pair joins the first claim of which one of its
        words is a hub (in at least half of the claim's documents: "gzip") or which holds at least half of its
        documents; otherwise it starts a claim of its own. The alternatives of a reworded claim ("corrupt",
        "destroy"; "4 GB", "four gigabytes") share its hub; an honest pair that shares only an alternative
        ("large" and "small") stays apart, and alone it is no claim (``min_pairs``)."""
        groups: list[tuple[list[PairEvidence], dict[int, int], Counter]] = []  # pairs, document -> sentence, words
        for e in sorted(kept, key=lambda e: (-e.significance, e.pair)):
            first: dict[int, int] = {}
            for d, s in occurrences[e.pair]:
                first.setdefault(d, s)
            chosen = None
            for group in groups:
                members, places, words = group
                hub = any(2 * words[word] >= len(places) for word in e.pair)
                if hub or 2 * sum(d in places for d in first) >= len(first):
                    chosen = group
                    break
            if chosen is None:
                chosen = ([], {}, Counter())
                groups.append(chosen)
            chosen[0].append(e)
            for d, s in first.items():
                if d not in chosen[1]:
                    chosen[1][d] = s
                    chosen[2].update(set(documents[d][s].words))
        claims = []
        for members, places, _ in groups:
            if len(members) < self.min_pairs:
                continue
            weight: Counter = Counter()
            for e in members:
                weight[e.pair[0]] += e.records
                weight[e.pair[1]] += e.records
            core = tuple(sorted(weight, key=lambda word: (-weight[word], word)))
            wordings = {documents[d][s].text for d, s in places.items()}
            claims.append(Claim(core, frozenset(e.pair for e in members), len(places), len(wordings),
                                max(e.significance for e in members), max(e.host_ratio for e in members),
                                [documents[d][s].text for d, s in sorted(places.items())[:3]]))
        return sorted(claims, key=lambda claim: (-claim.significance, claim.core))

    def _index(self) -> None:
        self._by_pair = {pair: claim for claim in self.claims_ for pair in claim.pairs}
        self._words = {word for claim in self.claims_ for word in claim.core}
        # what every spelling of a core word starts with ("bodies" -> "body": "bod"), to skip texts quickly;
        # one per word, so that two words with the same prefix count twice (a test that never misses)
        self._prefixes = sorted(word[:max(2, len(word) - 1)] for word in self._words)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if hasattr(self, "claims_"):
            self._index()

    # matching -----------------------------------------------------------------

    def match(self, text: str) -> ClaimMatch | None:
        """The strongest claim a foreign sentence of ``text`` states, if any."""
        if not self._words:
            return None
        lower = text.lower()
        if sum(prefix in lower for prefix in self._prefixes) < 2:
            return None  # a claim's pair needs two of its core words
        best: ClaimMatch | None = None
        for sentence in parse(text, self.min_foreign):
            if not sentence.foreign:
                continue
            words = sorted(set(sentence.words) & self._words)
            hits: Counter = Counter()
            for pair in combinations(words, 2):
                claim = self._by_pair.get(pair)
                if claim is not None:
                    hits[claim.id] += 1
                    if best is None or (hits[claim.id], claim.significance) > (best.pairs, best.claim.significance):
                        best = ClaimMatch(claim, hits[claim.id], sentence_id(sentence.text))
        return best


__all__ = ["Claim", "ClaimFinder", "ClaimMatch", "PairEvidence", "core_id", "sentence_id"]
