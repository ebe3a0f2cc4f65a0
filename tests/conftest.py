"""Shared fixtures: the embedded broker, durable brokers, unique topic names.

One memory broker serves the whole session; tests never share a topic, so they can run alone,
in any order, or in parallel. Every process a fixture starts is stopped at its teardown.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from pipelines.broker import EmbeddedBroker
from tests.faults.fuzz_inputs import FAULTS_PROFILE, FUZZED, PROFILE

TOPIC_TIMEOUT_S = 30.0


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """A memory-backed broker for the whole session; use ``broker.bootstrap_servers``."""
    with EmbeddedBroker() as session_broker:
        yield session_broker


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    """A topic name no other test (or rerun of this one) uses: ``t.<test name>.<random>``."""
    return _unique_topic_name(request.node.name)


@pytest.fixture
def create_topic(request: pytest.FixtureRequest) -> Callable[..., str]:
    """``create_topic(partitions=1, name=None, bootstrap_servers=None) -> name``.

    Creates a topic with ``partitions`` partitions through the Kafka admin API and returns its
    name (a fresh unique one unless ``name`` is given). The session ``broker`` is used unless
    ``bootstrap_servers`` names another, so a test of a durable broker does not start it.
    """
    counter = itertools.count(1)

    def create(
        partitions: int = 1, name: str | None = None, bootstrap_servers: str | None = None
    ) -> str:
        topic = name or _unique_topic_name(f"{request.node.name}.{next(counter)}")
        servers = bootstrap_servers or request.getfixturevalue("broker").bootstrap_servers
        create_topic_now(servers, topic, partitions)
        return topic

    return create


@pytest.fixture
def durable_broker_factory(tmp_path: Path) -> Iterator[Callable[..., EmbeddedBroker]]:
    """``factory(durable_dir=None, port=None) -> started EmbeddedBroker`` with durable storage.

    Without ``durable_dir`` each call gets a new directory under ``tmp_path``; pass the same
    directory again (after stopping the first broker) to test a restart. All brokers made
    here are stopped at teardown, whatever state the test left them in.
    """
    started: list[EmbeddedBroker] = []
    counter = itertools.count(1)

    def factory(durable_dir: Path | None = None, port: int | None = None) -> EmbeddedBroker:
        directory = durable_dir or tmp_path / f"broker-{next(counter)}"
        durable = EmbeddedBroker(port=port, durable_dir=directory)
        started.append(durable)
        durable.start()
        return durable

    yield factory
    for durable in started:
        durable.stop()


def create_topic_now(bootstrap_servers: str, topic: str, partitions: int) -> None:
    """Create ``topic`` and wait until the broker's metadata shows all of its partitions."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions)])
    futures[topic].result(TOPIC_TIMEOUT_S)
    metadata = admin.list_topics(topic, timeout=TOPIC_TIMEOUT_S)
    assert len(metadata.topics[topic].partitions) == partitions


def _unique_topic_name(label: str) -> str:
    # Kafka topic names allow [a-zA-Z0-9._-], at most 249 characters.
    cleaned = re.sub(r"[^a-zA-Z0-9._-]+", "-", label).strip("-")[:150]
    return f"t.{cleaned}.{uuid.uuid4().hex[:8]}"


# The fault suite's report: how many inputs each fuzz test fed to the code under test, one
# line per test under HYPOTHESIS_PROFILE=faults (make faults), the total otherwise; the
# README's "fuzzed inputs" figure. Under pytest-xdist each worker counts its own tests and
# hands its counts to the controller, which reports them.


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker
        workeroutput["fuzzed"] = dict(FUZZED)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    FUZZED.update(getattr(node, "workeroutput", {}).get("fuzzed", {}))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FUZZED or hasattr(terminalreporter.config, "workeroutput"):
        return
    terminalreporter.section("fuzzed inputs")
    if PROFILE == FAULTS_PROFILE:
        for test, inputs in sorted(FUZZED.items()):
            terminalreporter.write_line(f"{test}: {inputs:,} inputs")
    total = sum(FUZZED.values())
    terminalreporter.write_line(
        f"fuzzed inputs: {total:,} in {len(FUZZED)} tests (profile {PROFILE})"
    )
