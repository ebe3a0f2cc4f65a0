"""The kill tests' ``jobs`` fixture. (The report of fuzzed inputs is in tests/conftest.py,
which pytest-xdist's controller loads too.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

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
