"""Text utilities shared by every stage: words as hashes, scripts, language, bounded counters and samples.

Each is computed once per batch where a batch carries it (``Batch.words``), so
MinHash, trigger statistics and the embedder read the same vectorised form
instead of tokenising the text again.
"""
