"""Progress bars show on a terminal and stay quiet in CI or when output is redirected."""

from __future__ import annotations

import io

from dokumi.progress import progress_bar, progress_enabled


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_quiet_when_not_a_terminal(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert not progress_enabled(io.StringIO())
    assert progress_enabled(FakeTerminal())


def test_quiet_in_ci_even_on_a_terminal(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert not progress_enabled(FakeTerminal())
    monkeypatch.setenv("CI", "0")
    assert progress_enabled(FakeTerminal())


def test_explicit_choice_wins(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert progress_bar(10, "x").disable
    bar = progress_bar(10, "x", enabled=True)
    assert not bar.disable
    bar.close()
    assert progress_bar(10, "x", enabled=False).disable
