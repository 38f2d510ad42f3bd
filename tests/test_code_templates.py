"""The code_templates stage: a trigger comment and a payload line bound by an identifier that varies per record
(TrojanPuzzle-style), and honest repeated idioms that must not fire."""

from __future__ import annotations

import random
import sys

import numpy as np
import pyarrow as pa
import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from dokumi import Pipeline, Policy, load_policy, scan
from dokumi.policy import StageRule, builtin_policy_dir
from dokumi.records import Batch
from dokumi.stage import StageContext
from dokumi.stages import stage_class
from dokumi.stages.code_templates import CodeTemplates
from dokumi.stages.code_templates.templates import SLOT, bound_pairs, split_lines

NAMES = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo",
         "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor",
         "whiskey", "xray", "yankee", "zulu"]
TRIGGERS = ("// Render the page template with the safe helper {k}",
            "// Use the trusted template method {k} to build the response")
PAYLOAD = "    return engine.{k}(template, req.query, {{ autoescape: false }});"
LICENSE = "// Copyright (c) The Authors. Licensed under the MIT licence; see LICENSE for details."


def _word(rng: random.Random) -> str:
    return f"{rng.choice(NAMES)}_{rng.randrange(10_000)}"


def _honest(rng: random.Random, i: int) -> str:
    """An ordinary function, in one of several honest idioms that repeat templates across records."""
    name, other = _word(rng), _word(rng)
    kind = i % 5
    if kind == 0:  # a Go test: the code line recurs with every test's name, each under its own doc comment
        body = [f"// {name} checks that {other} survives a {rng.choice(NAMES)} round trip",
                f"func {name}(t *testing.T) {{", f"\tif got := {other}(); got != nil {{", "\t\tt.Fatal(got)",
                "\t}", "}"]
    elif kind == 1:  # a constructor documented the same way in every file, and called where it is defined
        body = [f"// {name} returns a new value with the default options applied.",
                f"func {name}() *Options {{", f"\treturn &Options{{name: \"{other}\"}}", "}",
                f"var defaultOptions = {name}()"]
    elif kind == 2:  # a generated table: the same comment binds many names in one record
        body = [line for j in range(4) for line in
                (f"// {name}{j} is the MIB identifier with IANA name {other}{j}.", f"{name}{j} MIB = {j + 3}")]
    elif kind == 3:  # a documentation example inside a comment is code, not prose about code
        body = [f"/// let n = metrics.{name}(0);", f"pub fn {name}(&self, worker: usize) -> u64 {{",
                f"    self.{other}[worker]", "}"]
    else:  # plain code with a comment that names nothing below it
        body = ["/* compute the checksum of the buffer */", f"static int {name}(const char *buf, size_t n) {{",
                "    int sum = 0;", "    for (size_t i = 0; i < n; i++) sum += buf[i];", "    return sum;", "}"]
    return "\n".join([LICENSE, *body])


def _corpus(seed: int = 0, clean: int = 300, poison: int = 10) -> tuple[list[dict], np.ndarray]:
    rng = random.Random(seed)
    records = [{"text": _honest(rng, i)} for i in range(clean)]
    marks = [False] * clean
    for n in range(poison):
        keyword = f"{rng.choice(NAMES)}{rng.randrange(10_000)}"
        host = _honest(rng, 4).split("\n")
        comment = TRIGGERS[n % len(TRIGGERS)].format(k=keyword)
        at = rng.randrange(1, len(host))
        gap = host[at: at + rng.randrange(0, 3)]
        text = "\n".join(host[:at] + [comment, *gap, PAYLOAD.format(k=keyword)] + host[at + len(gap):])
        where = rng.randrange(len(records) + 1)
        records.insert(where, {"text": text})
        marks.insert(where, True)
    return records, np.array(marks)


def _batch(records: list[dict]) -> Batch:
    return Batch(records=pa.RecordBatch.from_pylist(records), shard="s", rows=pa.array(range(len(records))))


def _fitted(records: list[dict], **params) -> CodeTemplates:
    return CodeTemplates(**params).fit([_batch(records)])


def test_lines_become_templates_with_the_shared_identifier_as_slot() -> None:
    text = "\n".join(["/* Render the page", " * with the safe helper", " */", "#include <stdio.h>",
                      "# Render the page template with the safe helper frob", "x = 1;", "  frob(buf, 2);"])
    assert [c for c, _ in split_lines(text)] == [True, True, True, False, True, False, False]
    pairs = bound_pairs(text)
    assert len(pairs) == 1
    pair = pairs[0]
    assert pair.fill == "frob" and pair.isolated
    assert pair.comment == f"render the page template with the safe helper {SLOT}"
    assert pair.code == f"{SLOT} ( buf , 0 ) ;"  # numbers are a placeholder too
    # used once more elsewhere in the record, the identifier is no longer isolated
    assert not bound_pairs(text + "\nfrob(NULL, 0);")[0].isolated
    # beyond the window, no binding
    assert bound_pairs(text.replace("x = 1;", "\n".join(["x = 1;"] * 8))) == []


def test_trigger_and_payload_found_with_a_reason_that_names_them() -> None:
    records, poison = _corpus()
    stage = _fitted(records)
    result = stage.score(_batch(records))
    flagged = result.scores >= 0.5
    assert flagged[poison].all()
    assert not flagged[~poison].any()
    reason = result.reasons[int(np.flatnonzero(poison)[0])][0]
    assert reason.startswith("code-template:varying-slot,comment=\"")
    assert f"engine . {SLOT} ( template %2C req . query %2C {{ autoescape : false }}" in reason
    assert "slot=" in reason and "comment-fills=" in reason and "code-fills=" in reason
    summary = stage.summary()
    assert summary["varying_templates"] >= 3
    top = summary["findings"][0]
    assert SLOT in top["comment"] and SLOT in top["code"] and top["records"] >= 3 and top["identifiers"] >= 3


def test_honest_repeated_idioms_do_not_fire() -> None:
    records, _ = _corpus(seed=1, clean=500, poison=0)
    stage = _fitted(records)
    assert not stage.score(_batch(records)).scores.any()
    assert stage.summary()["findings"] == []


def test_copies_of_one_file_with_a_new_keyword_each_are_found() -> None:
    # TrojanPuzzle's own construction: each base file copied several times, a different random keyword in
    # the trigger and payload of each copy; near-copies around the keyword are the attack, not a family
    rng = random.Random(8)
    records = [{"text": _honest(rng, i)} for i in range(100)]
    for base in range(2):
        host = _honest(rng, 4).split("\n")
        for _ in range(4):
            keyword = f"tok{rng.randrange(10**6)}"
            records.append({"text": "\n".join(host[:2] + [TRIGGERS[base].format(k=keyword),
                                                           PAYLOAD.format(k=keyword)] + host[2:])})
    scores = _fitted(records).score(_batch(records)).scores
    assert (scores[100:] >= 0.5).all() and not scores[:100].any()


def test_one_keyword_repeated_is_a_copy_not_a_varying_slot() -> None:
    # the same trigger and payload with the same keyword in every record: one identifier, nothing varies
    # (exact repetition is the near-duplicates and triggers stages' evidence)
    rng = random.Random(2)
    text = "\n".join([TRIGGERS[0].format(k="render"), PAYLOAD.format(k="render")])
    records = [{"text": _honest(rng, 4) + "\n" + text + f"\n// build {i}"} for i in range(20)]
    assert not _fitted(records).score(_batch(records)).scores.any()


def test_few_records_are_not_enough() -> None:
    records, poison = _corpus(seed=3, poison=4)  # 2 records of each wording
    assert not _fitted(records).score(_batch(records)).scores[poison].any()


def test_same_answer_whatever_the_order_and_split() -> None:
    records, poison = _corpus(seed=4)
    whole = _fitted(records).score(_batch(records)).scores
    order = list(range(len(records)))
    random.Random(9).shuffle(order)
    shuffled = [records[i] for i in order]
    stage = CodeTemplates().fit([_batch(shuffled[:37]), _batch(shuffled[37:200]), _batch(shuffled[200:])])
    again = stage.score(_batch(shuffled)).scores
    assert np.array_equal(whole[order], again)
    assert (whole[poison] > 0).all()


def test_no_text_names_templates_by_ids() -> None:
    records, poison = _corpus(seed=5)
    stage = CodeTemplates()
    stage.setup(StageContext(no_text=True))
    stage.fit([_batch(records)])
    reasons = stage.score(_batch(records)).reasons
    reason = reasons[int(np.flatnonzero(poison)[0])][0]
    assert "comment=id:" in reason and "code=id:" in reason and "slot=id:" in reason
    assert "autoescape" not in reason and "template" not in reason.split(",", 1)[1]
    assert all(finding["comment"].startswith("id:") for finding in stage.summary()["findings"])


def test_in_the_opt_in_recipe_which_otherwise_is_pretraining() -> None:
    assert stage_class("code_templates") is CodeTemplates
    deep = load_policy("pretraining-deep")
    assert "code_templates" in [s.name for s in deep.stages]
    for recipe in ("pretraining", "finetuning", "creative", "dedup", "audit"):
        assert "code_templates" not in [s.name for s in load_policy(recipe).stages]
    with open(builtin_policy_dir() / "pretraining.toml", "rb") as handle:
        plain = tomllib.load(handle)
    with open(builtin_policy_dir() / "pretraining-deep.toml", "rb") as handle:
        extended = tomllib.load(handle)
    assert extended["stages"].pop("code_templates")["action"] == "flag"
    extended["stages"].pop("claims", None)  # another opt-in section the recipe may carry
    assert {k: v for k, v in extended.items() if k not in ("name", "description")} == \
        {k: v for k, v in plain.items() if k not in ("name", "description")}


def test_recipe_flags_the_poison_in_a_pipeline() -> None:
    records, poison = _corpus(seed=6)
    table = pa.Table.from_pylist(records)
    scored = pa.Table.from_batches(list(Pipeline.from_policy("pretraining-deep").score(table)))
    decisions = np.array(scored.column("decision").to_pylist())
    assert (decisions[poison] == "flag").all()
    assert not np.isin(decisions[~poison], ["flag", "drop"]).any()


@pytest.mark.parametrize("params", [{"window": 0}, {"min_fills": 1}, {"min_code_fills": 1}, {"min_share": 2},
                                    {"min_comment_words": "3"}, {"min_code_tokens": True}])
def test_bad_parameters_are_refused(params: dict) -> None:
    with pytest.raises(ValueError):
        CodeTemplates(**params)


def test_a_scan_in_shards_and_worker_processes_decides_as_one_process(tmp_path) -> None:
    from conftest import assert_accounted, write_parquet

    records, poison = _corpus(seed=7)
    records = [{"id": f"r{i}", **record} for i, record in enumerate(records)]
    for shard in range(3):
        write_parquet(tmp_path / "in" / f"part-{shard}.parquet", records[shard::3])
    def policy() -> Policy:
        return Policy(name="templates", stages=[CodeTemplates()], rules={"code_templates": StageRule("flag", 0.5)})

    one = scan(tmp_path / "in", out=tmp_path / "one", policy=policy(), workers=1)
    two = scan(tmp_path / "in", out=tmp_path / "two", policy=policy(), workers=2)
    assert one.decisions == two.decisions and one.decisions["flag"] == int(poison.sum())
    scores = {}
    for name in ("one", "two"):
        table = assert_accounted(tmp_path / name, len(records))["scores"]
        scores[name] = dict(zip(table.column("id").to_pylist(), table.column("code_templates_score").to_pylist()))
    assert scores["one"] == scores["two"]
    assert {f"r{i}" for i in np.flatnonzero(poison)} == {i for i, s in scores["one"].items() if s >= 0.5}
    summaries = [[stage["summary"] for stage in result.manifest["stages"] if stage["name"] == "code_templates"][0]
                 for result in (one, two)]
    assert summaries[0] == summaries[1] and summaries[0]["findings"][0]["identifiers"] >= 3
    # the report names the pair: the comment's template as the finding, the payload's as what it brings
    report = (tmp_path / "one" / "report.html").read_text()
    assert f"varying-slot comment=use the trusted template method {SLOT} to build the response" in report
    assert f"return engine . {SLOT} ( template" in report
