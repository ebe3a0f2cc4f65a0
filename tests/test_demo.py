"""``payrecon demo``: the README's first command finds exactly what was injected."""

from __future__ import annotations

from pipelines.cli import main


def test_demo_finds_every_injected_discrepancy_and_nothing_else(tmp_path, capsys):
    assert main(["demo", "--events", "2000", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "missed 0, false positives 0" in out
    assert "dead letters by reason = malformed lines by reason: yes" in out
    assert f"report written to {tmp_path.resolve() / 'report.html'}" in out
    assert "<svg" in (tmp_path / "report.html").read_text()


def test_unknown_command_is_a_usage_error(capsys):
    assert main(["reconcil"]) == 2
    assert "reconcile" in capsys.readouterr().err
