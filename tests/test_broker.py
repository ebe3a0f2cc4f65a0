"""What users of the embedded broker rely on: messages round-trip, a durable broker keeps every
acknowledged message through kill -9 and restart, and a killed command leaves nothing behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from pipelines.broker import BrokerConfigError, EmbeddedBroker

REPO = Path(__file__).resolve().parent.parent
COMMAND_START_TIMEOUT_S = 60.0


# -- Kafka helpers -----------------------------------------------------------------------------


def produce_acknowledged(
    servers: str, topic: str, messages: Iterable[tuple[int, bytes, bytes]], linger_ms: int = 20
) -> list[tuple[int, bytes, bytes]]:
    """Produce ``(partition, key, value)`` in multi-record batches; assert each was acked."""
    producer = Producer(
        {
            "bootstrap.servers": servers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": linger_ms,
        }
    )
    acked: list[tuple[int, bytes, bytes]] = []
    errors: list[KafkaError] = []

    def on_delivery(err, msg) -> None:
        if err:
            errors.append(err)
        else:
            acked.append((msg.partition(), msg.key(), msg.value()))

    count = 0
    for partition, key, value in messages:
        producer.produce(topic, value, key, partition=partition, on_delivery=on_delivery)
        producer.poll(0)
        count += 1
    assert producer.flush(30) == 0
    assert not errors, errors
    assert len(acked) == count
    return acked


def consume_to_end(servers: str, topic: str, partitions: int) -> list[tuple[int, bytes, bytes]]:
    """Every message of ``topic`` as ``(partition, key, value)``, read with assign() to EOF."""
    consumer = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": "test-broker-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got: list = []
    at_end: set = set()
    deadline = time.monotonic() + 30
    while len(at_end) < partitions and time.monotonic() < deadline:
        for msg in consumer.consume(1000, timeout=0.5):
            error = msg.error()
            if error is None:
                got.append((msg.partition(), msg.key(), msg.value()))
            elif error.code() == KafkaError._PARTITION_EOF:
                at_end.add(msg.partition())
            else:
                raise AssertionError(error)
    consumer.close()
    assert len(at_end) == partitions, f"only partitions {at_end} reached their end"
    return got


def numbered(count: int, partitions: int) -> list[tuple[int, bytes, bytes]]:
    return [(i % partitions, f"key-{i}".encode(), f"value-{i}".encode()) for i in range(count)]


# -- the command as a process ------------------------------------------------------------------


def start_command(*args: str) -> subprocess.Popen:
    """``python -m pipelines.broker ARGS``; returns once it printed its one line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.broker", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    line = process.stdout.readline()  # blocks until the broker is ready, or the command ended
    assert line.startswith("payrecon broker: Kafka-compatible broker on"), (
        line + process.stderr.read()
    )
    return process


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def is_running(pid: int) -> bool:
    """Alive and not a zombie (a zombie holds no port; whoever adopted it may never reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def kill_9(process: subprocess.Popen) -> list[int]:
    """SIGKILL the command (not its children); return the children it had."""
    children = children_of(process.pid)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    return children


def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def commands() -> Iterable[list[subprocess.Popen]]:
    """Started ``payrecon broker`` processes, killed (with their children) at teardown."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()  # its children die with it
                process.wait()


# -- tests -------------------------------------------------------------------------------------


def test_memory_broker_round_trips_messages_with_keys_and_values(broker, create_topic):
    topic = create_topic(partitions=2)
    sent = numbered(1000, partitions=2)

    produce_acknowledged(broker.bootstrap_servers, topic, sent)

    got = consume_to_end(broker.bootstrap_servers, topic, partitions=2)
    for partition in (0, 1):
        # Order is kept within a partition, across the multi-record batches.
        assert [m for m in got if m[0] == partition] == [m for m in sent if m[0] == partition]


def test_durable_broker_keeps_messages_of_concurrent_producers_across_a_restart(
    durable_broker_factory, create_topic
):
    """Concurrent producers make Tansu's conditional S3 writes race; the replayed log must be
    the one the producers were acknowledged against."""
    first = durable_broker_factory()
    topic = create_topic(partitions=3, bootstrap_servers=first.bootstrap_servers)
    batches = [
        [(i % 3, f"p{p}-key-{i}".encode(), f"p{p}-value-{i}".encode()) for i in range(2000)]
        for p in range(6)
    ]
    with ThreadPoolExecutor(len(batches)) as pool:
        acked = pool.map(
            lambda batch: produce_acknowledged(first.bootstrap_servers, topic, batch, linger_ms=0),
            batches,
        )
        sent = [message for batch in acked for message in batch]
    first.stop()

    second = durable_broker_factory(durable_dir=first.durable_dir)

    assert Counter(consume_to_end(second.bootstrap_servers, topic, 3)) == Counter(sent)


def test_second_broker_on_a_durable_dir_in_use_is_refused(durable_broker_factory):
    running = durable_broker_factory()

    with pytest.raises(BrokerConfigError, match="another payrecon broker"):
        EmbeddedBroker(durable_dir=running.durable_dir).start()


def test_command_prints_its_address_and_stops_cleanly_on_sigterm(commands):
    port = free_port()
    process = start_command("--port", str(port))
    commands.append(process)
    children = children_of(process.pid)

    process.send_signal(signal.SIGTERM)

    assert process.wait(10) == 0
    assert not any(is_running(pid) for pid in children)
    assert port_is_free(port)


def test_kill_9_of_the_durable_command_leaves_no_process_and_no_port_behind(commands, tmp_path):
    port = free_port()
    process = start_command("--port", str(port), "--durable", str(tmp_path / "data"))
    commands.append(process)

    children = kill_9(process)

    assert len(children) == 2  # Tansu and the S3 server
    assert wait_until(lambda: not any(is_running(pid) for pid in children))
    assert wait_until(lambda: port_is_free(port))


def test_durable_command_keeps_every_acknowledged_message_through_kill_9(
    commands, create_topic, tmp_path
):
    port, data = free_port(), tmp_path / "data"
    commands.append(start_command("--port", str(port), "--durable", str(data)))
    servers = f"127.0.0.1:{port}"
    topic = create_topic(partitions=3, bootstrap_servers=servers)
    sent = produce_acknowledged(servers, topic, numbered(500, partitions=3))

    kill_9(commands[-1])
    assert wait_until(lambda: port_is_free(port))
    commands.append(start_command("--port", str(port), "--durable", str(data)))

    got = consume_to_end(servers, topic, partitions=3)
    assert Counter(got) == Counter(sent)  # every message, exactly once, key and value intact
    assert len(set(got)) == 500


def test_broker_that_fails_to_start_exits_3_with_its_log(tmp_path):
    failing = tmp_path / "tansu"
    failing.write_text("#!/bin/sh\necho 'error: no storage engine for you' >&2\nexit 1\n")
    failing.chmod(0o755)

    result = subprocess.run(
        [sys.executable, "-m", "pipelines.broker", "--port", str(free_port())],
        cwd=REPO,
        env={**os.environ, "CALF_TANSU_BIN": str(failing)},
        capture_output=True,
        text=True,
        timeout=COMMAND_START_TIMEOUT_S,
    )

    assert result.returncode == 3
    assert result.stderr.startswith("payrecon broker: the broker did not start: tansu exited")
    assert "error: no storage engine for you" in result.stderr


def test_port_in_use_exits_2_with_the_reason(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = subprocess.run(
            [sys.executable, "-m", "pipelines.broker", "--port", str(port)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=COMMAND_START_TIMEOUT_S,
        )

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"payrecon broker: port {port} on 127.0.0.1 is already in use "
        "(Address already in use); choose another with --port"
    ]


def test_durable_dir_that_cannot_be_created_exits_2_naming_it(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")

    result = subprocess.run(
        [sys.executable, "-m", "pipelines.broker", "--durable", str(not_a_dir / "data")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=COMMAND_START_TIMEOUT_S,
    )

    assert result.returncode == 2
    assert result.stderr.startswith(f"payrecon broker: --durable {not_a_dir / 'data'}:")
    assert len(result.stderr.strip().splitlines()) == 1
