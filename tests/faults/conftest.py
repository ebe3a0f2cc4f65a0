"""The fault suite's report: how many inputs each fuzz test fed to the code under test.

One line per test under ``HYPOTHESIS_PROFILE=faults`` (``make faults``), the total otherwise;
the README's "fuzzed inputs" figure is that total. Also the kill tests' ``jobs`` fixture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.fuzz_inputs import FAULTS_PROFILE, FUZZED, PROFILE
from tests.faults.kill_helpers import Job


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[Callable[[str, list[str], str], Job]]:
    """``start(module, argv, name) -> Job``; every job still running at teardown is killed."""
    started: list[Job] = []

    def start(module: str, argv: list[str], name: str) -> Job:
        job = Job(module, argv, tmp_path, name)
        started.append(job)
        return job

    yield start
    for job in started:
        job.kill()


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
