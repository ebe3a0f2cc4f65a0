"""The fault suite's report: how many inputs each fuzz test fed to the code under test.

One line per test under ``HYPOTHESIS_PROFILE=faults`` (``make faults``), the total otherwise;
the README's "fuzzed inputs" figure is that total.
"""

from __future__ import annotations

import pytest

from tests.faults.fuzz_inputs import FAULTS_PROFILE, FUZZED, PROFILE


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FUZZED:
        return
    terminalreporter.section("fuzzed inputs")
    if PROFILE == FAULTS_PROFILE:
        for test, inputs in sorted(FUZZED.items()):
            terminalreporter.write_line(f"{test}: {inputs:,} inputs")
    total = sum(FUZZED.values())
    terminalreporter.write_line(
        f"fuzzed inputs: {total:,} in {len(FUZZED)} tests (profile {PROFILE})"
    )
