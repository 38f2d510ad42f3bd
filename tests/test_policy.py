"""Policy recipes: found by name or path; every mistake names the file and the key."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dokumi import PolicyError, load_policy
from dokumi.policy import builtin_policies, builtin_policy_dir, parse_override

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return path


def test_builtin_recipes_load_by_name_and_audit_never_drops():
    assert {"pretraining", "finetuning", "audit"} <= set(builtin_policies())
    for name in builtin_policies():
        policy = load_policy(name)
        assert policy.name == name
        assert policy.stages, f"{name} runs no stage"
        assert len(policy.sha256) == 64
    assert load_policy("audit").never_drops()
    assert not load_policy("pretraining").never_drops()


def test_every_threshold_in_builtin_recipes_carries_a_comment():
    for path in builtin_policy_dir().glob("*.toml"):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if line.strip().startswith(("threshold", "flag_threshold")):
                above = lines[max(0, number - 6): number]
                assert any(
                    ln.strip().startswith("#") for ln in above
                ) or "#" in line, f"{path.name}:{number + 1} has no comment on what it trades off"


def test_recipe_by_path(tmp_path):
    path = write(tmp_path, 'name = "mine"\n[stages.invisible]\naction = "flag"\nthreshold = 0.7\n')
    policy = load_policy(path)
    assert policy.name == "mine"
    assert policy.rules["invisible"].threshold == 0.7


@pytest.mark.parametrize(
    "text, message",
    [
        ('nmae = "typo"\n', "top level: unknown key 'nmae'"),
        ("[stages.invisible]\ntreshold = 0.5\n", "[stages.invisible]: unknown key 'treshold'"),
        ("[stages.invisible]\naction = \"delete\"\n", "action = 'delete' is not one of drop, flag, off"),
        ("[stages.invisible]\nthreshold = 1.5\n", "threshold = 1.5 must be a number in [0, 1]"),
        ("[stages.invisible]\nthreshold = \"high\"\n", "threshold = 'high' must be a number"),
        ("[stages.invisible]\nthreshold = 0.4\nflag_threshold = 0.6\n", "flag_threshold = 0.6 is above threshold"),
        ("[stages.invisible]\nsupport = 0\n", "support = 0 must be a number in (0, 1]"),
        ("[stages.invisible]\nduplicates = \"drop\"\n", "duplicates = 'drop' is not one of keep, duplicate"),
        ("[stages.nonsense]\n", "unknown stage 'nonsense'"),
        ("[stages.invisible]\nmax_count = -1\n", "max_count = -1 must be a positive integer"),
        ("[records]\nnull_content = \"burn\"\n", "[records]: null_content = 'burn' is not one of keep, flag, drop"),
        ("[records]\nmax_text_bytes = 0\n", "max_text_bytes = 0 must be a positive integer"),
        ("[columns]\ntxet = \"body\"\n", "unknown column role 'txet'"),
        ("[stages\n", "not valid TOML"),
    ],
)
def test_bad_recipes_name_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises((PolicyError, ValueError)) as error:
        load_policy(path)
    assert message in str(error.value)
    assert str(path) in str(error.value)


def test_unknown_policy_name_lists_builtins():
    with pytest.raises(PolicyError, match="no policy named 'pretrainig'; built-in policies: .*pretraining"):
        load_policy("pretrainig")


def test_off_removes_the_stage(tmp_path):
    policy = load_policy(write(tmp_path, '[stages.invisible]\naction = "off"\n'))
    assert policy.stages == []


def test_overrides_parse_toml_values_and_reach_the_stage():
    assert parse_override("invisible.threshold=0.9") == ("invisible.threshold", 0.9)
    assert parse_override("near.protect=some/path") == ("near.protect", "some/path")
    assert parse_override("x.flag=true") == ("x.flag", True)
    policy = load_policy("pretraining", overrides={"invisible.max_count": 3, "records.null_content": "drop"})
    stage = next(s for s in policy.stages if s.name == "invisible")
    assert stage.max_count == 3
    assert policy.records.null_content == "drop"
    with pytest.raises(PolicyError, match="expected STAGE.KEY=VALUE"):
        load_policy("pretraining", overrides={"threshold": 1})


def test_recipes_ship_inside_the_wheel(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(ROOT)],
        check=True,
    )
    wheel = next(tmp_path.glob("dokumi-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for recipe in ROOT.joinpath("filters").rglob("*.toml"):
        assert f"dokumi/filters/{recipe.relative_to(ROOT / 'filters').as_posix()}" in names
