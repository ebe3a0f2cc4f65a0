"""``payrecon publish``: every line of a file becomes one acknowledged, keyed, timed message."""

from __future__ import annotations

import json
import socket
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path

import pytest

from pipelines import publish
from pipelines.publish import keyed_messages, publish_lines
from pipelines.synthetic import ANSWER_KEY_FILE, LEDGER_FILE, GenerateConfig, generate_day
from tests.kafka_helpers import consume_all
from transforms.kafka_offsets import BrokerUnavailable
from transforms.ledger_validation import parse_rfc3339_micros


def event(i: int, at: str, order: str | None = None) -> bytes:
    return json.dumps(
        {"event_id": f"e{i}", "order_id": order or f"ord_{i}", "occurred_at": at, "amount": i}
    ).encode()


def millis(text: str) -> int:
    micros = parse_rfc3339_micros(text)
    assert micros is not None
    return micros // 1000


@pytest.fixture(scope="module")
def ledger_day(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("publish-day")
    generate_day(GenerateConfig(date(2026, 11, 20), 1_500, 0.02, out, seed=9, malformed_rate=0.02))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- without a broker: keys and timestamps ----------------------------------------------------


def test_line_without_valid_timestamp_takes_the_previous_lines_timestamp():
    lines = [
        event(1, "2026-11-20T10:00:00.000Z"),
        b"{not json",
        event(3, "2026-11-20 25:00"),
        event(4, "2026-11-20T11:00:00.500Z"),
    ]
    stamps = [ts for _, _, ts in keyed_messages(lines, "order_id", "occurred_at")]
    first = millis("2026-11-20T10:00:00.000Z")
    assert stamps == [first, first, first, millis("2026-11-20T11:00:00.500Z")]


def test_leading_lines_without_timestamp_take_the_first_valid_one():
    lines = [b"[]", b"null", event(3, "2026-11-20T10:00:00+01:00")]
    messages = list(keyed_messages(lines, "order_id", "occurred_at"))
    assert [v for v, _, _ in messages] == lines
    assert {ts for _, _, ts in messages} == {millis("2026-11-20T09:00:00Z")}


def test_key_is_the_key_field_of_an_object_else_none():
    lines = [event(1, "2026-11-20T10:00:00Z"), b'{"order_id": 42}', b'["ord_1"]', b"{bad"]
    keys = [k for _, k, _ in keyed_messages(lines, "order_id", "occurred_at")]
    assert keys == [b"ord_1", b"42", None, None]


def test_values_are_the_lines_without_their_newline():
    lines = [event(1, "2026-11-20T10:00:00Z") + b"\n", b"plain\r\n", "text\n"]
    values = [v for v, _, _ in keyed_messages(lines, None, None)]
    assert values == [event(1, "2026-11-20T10:00:00Z"), b"plain", b"text"]


def test_no_timestamp_field_leaves_the_timestamp_to_the_producer():
    lines = [event(1, "2026-11-20T10:00:00Z")]
    assert [ts for _, _, ts in keyed_messages(lines, "order_id", None)] == [None]


# -- against the broker ------------------------------------------------------------------------


def test_every_line_becomes_one_message_with_its_exact_bytes(broker, topic_name, ledger_day):
    lines = (ledger_day / LEDGER_FILE).read_bytes().splitlines()
    result = publish_lines(broker.bootstrap_servers, topic_name, lines, partitions=3)
    assert result.ok and result.published == result.produced == len(lines)
    messages = consume_all(broker.bootstrap_servers, topic_name, 3)
    assert Counter(m.value() for m in messages) == Counter(lines)
    assert result.bytes == sum(len(line) for line in lines)
    assert result.partitions == dict(Counter(m.partition() for m in messages))


def test_messages_are_keyed_by_order_id_and_timed_by_occurred_at(broker, topic_name, ledger_day):
    lines = (ledger_day / LEDGER_FILE).read_bytes().splitlines()
    publish_lines(broker.bootstrap_servers, topic_name, lines, partitions=4)
    bad = {m["line"] for m in json.loads((ledger_day / ANSWER_KEY_FILE).read_text())["malformed"]}
    good = {lines[n - 1] for n in range(1, len(lines) + 1) if n not in bad}
    checked = 0
    for message in consume_all(broker.bootstrap_servers, topic_name, 4):
        if message.value() in good:
            event = json.loads(message.value())
            assert message.key() == event["order_id"].encode()
            assert message.timestamp()[1] == millis(event["occurred_at"])
            checked += 1
    assert checked == len(good)


def _own_millis(line: bytes) -> int | None:
    try:
        value = json.loads(line)["occurred_at"]
    except (ValueError, KeyError, TypeError):
        return None
    micros = parse_rfc3339_micros(value) if isinstance(value, str) else None
    return None if micros is None else micros // 1000


def test_malformed_lines_land_at_their_neighbours_time(broker, topic_name, ledger_day):
    lines = (ledger_day / LEDGER_FILE).read_bytes().splitlines()
    publish_lines(broker.bootstrap_servers, topic_name, lines, partitions=2)
    stamps = {
        m.value(): m.timestamp()[1] for m in consume_all(broker.bootstrap_servers, topic_name, 2)
    }
    malformed = json.loads((ledger_day / ANSWER_KEY_FILE).read_text())["malformed"]
    untimed = [m["line"] for m in malformed if _own_millis(lines[m["line"] - 1]) is None]
    assert len(untimed) > 3
    for n in untimed:
        previous = next(t for i in range(n - 1, 0, -1) if (t := _own_millis(lines[i - 1])))
        assert stamps[lines[n - 1]] == previous


def test_one_orders_events_share_a_partition(broker, topic_name, ledger_day):
    lines = (ledger_day / LEDGER_FILE).read_bytes().splitlines()
    publish_lines(broker.bootstrap_servers, topic_name, lines, partitions=4)
    partitions_of, count = defaultdict(set), Counter()
    for message in consume_all(broker.bootstrap_servers, topic_name, 4):
        if message.key() is not None:
            partitions_of[message.key()].add(message.partition())
            count[message.key()] += 1
    assert sum(1 for n in count.values() if n > 1) > 10  # retries, refunds, double charges
    assert all(len(p) == 1 for p in partitions_of.values())


def test_missing_topic_is_created_with_the_requested_partitions(broker, topic_name):
    lines = [event(i, "2026-11-20T10:00:00Z") for i in range(40)]
    result = publish_lines(broker.bootstrap_servers, topic_name, lines, partitions=5)
    assert result.published == 40
    assert len(consume_all(broker.bootstrap_servers, topic_name, 5)) == 40
    assert set(result.partitions) <= set(range(5)) and len(result.partitions) > 1


def test_existing_topic_is_used_as_it_is(broker, create_topic):
    topic = create_topic(partitions=2)
    lines = [event(i, "2026-11-20T10:00:00Z") for i in range(30)]
    result = publish_lines(broker.bootstrap_servers, topic, lines, partitions=8)
    assert result.ok and set(result.partitions) <= {0, 1}


def test_refused_message_is_not_counted_as_published(broker, topic_name):
    lines = [event(1, "2026-11-20T10:00:00Z"), b'"' + b"x" * 20_000 + b'"']
    result = publish_lines(
        broker.bootstrap_servers, topic_name, lines, kafka_config={"message.max.bytes": 10_000}
    )
    assert (result.produced, result.published, result.failed) == (2, 1, 1)
    assert not result.ok and result.errors


def test_unreachable_broker_raises_broker_unavailable(topic_name):
    with pytest.raises(BrokerUnavailable):
        publish_lines(f"127.0.0.1:{free_port()}", topic_name, [b"{}"], connect_timeout=1.0)


# -- command line ------------------------------------------------------------------------------


def test_command_publishes_a_file_and_prints_a_summary(broker, topic_name, ledger_day, capsys):
    path = ledger_day / LEDGER_FILE
    code = publish.main(
        [
            "--bootstrap-servers",
            broker.bootstrap_servers,
            "--topic",
            topic_name,
            "--file",
            str(path),
            "--partitions",
            "2",
            "--quiet",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    count = len(path.read_bytes().splitlines())
    assert f"published {count:,} of {count:,} messages" in out
    assert "per partition: 0: " in out and "msgs/s" in out


def test_command_exits_3_with_a_clear_message_when_the_broker_is_unreachable(tmp_path, capsys):
    path = tmp_path / "lines.jsonl"
    path.write_bytes(event(1, "2026-11-20T10:00:00Z") + b"\n")
    code = publish.main(
        ["--bootstrap-servers", f"127.0.0.1:{free_port()}", "--file", str(path), "--timeout", "1"]
    )
    assert code == 3
    assert "broker unavailable" in capsys.readouterr().err


def test_command_exits_3_when_a_message_is_not_acknowledged(broker, topic_name, tmp_path):
    path = tmp_path / "lines.jsonl"
    path.write_bytes(b'"' + b"x" * 20_000 + b'"\n')
    code = publish.main(
        [
            "--bootstrap-servers",
            broker.bootstrap_servers,
            "--topic",
            topic_name,
            "--file",
            str(path),
            "--kafka-config",
            "message.max.bytes=10000",
            "--quiet",
        ]
    )
    assert code == 3


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--file", "/nonexistent/lines.jsonl"], "--file"),
        (["--file", __file__, "--partitions", "0"], "--partitions"),
        (["--file", __file__, "--kafka-config", "novalue"], "key=value"),
    ],
)
def test_bad_usage_exits_2_with_one_line(capsys, args, says):
    with pytest.raises(SystemExit) as exit_info:
        publish.main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err
