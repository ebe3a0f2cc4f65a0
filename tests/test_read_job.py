"""``payrecon read`` end to end on the real broker: decode, dead letters, counts, commits."""

from __future__ import annotations

import json
from datetime import timedelta

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.read import ReadOptions, main, run_read
from schemas.dead_letter import HEADER_PREFIX, dlq_topic
from tests.kafka_helpers import DAY, consume_all, encode, ledger_event, millis, new_topic, produce
from tests.test_decode import MALFORMED

WINDOW = ["--window-start", "2026-11-20T00:00:00Z", "--window-end", "2026-11-21T00:00:00Z"]


def read_options(bootstrap: str, topic: str, *extra: str) -> ReadOptions:
    return PipelineOptions(
        ["--bootstrap-servers", bootstrap, "--topic", topic, *WINDOW, *extra]
    ).view_as(ReadOptions)


def publish_day(bootstrap: str, topic: str, good: int) -> list[tuple]:
    """``good`` valid events and every malformed kind, spread over the day and beyond it."""
    records = []
    for i in range(good):
        moment = DAY + timedelta(seconds=i * 80)
        records.append((f"ord_{i}".encode(), encode(ledger_event(i, moment)), millis(moment)))
    for j, (value, _) in enumerate(MALFORMED):
        records.append((f"bad_{j}".encode(), value, millis(DAY) + j))
    outside = DAY + timedelta(days=1, seconds=5)
    records.append((b"late", encode(ledger_event(99_999, outside)), millis(outside)))
    produce(bootstrap, topic, records)
    return records


def test_read_decodes_the_window_dead_letters_the_rest_and_the_counts_add_up(broker):
    topic = new_topic(broker.bootstrap_servers, partitions=4)
    publish_day(broker.bootstrap_servers, topic, good=500)
    summary = run_read(read_options(broker.bootstrap_servers, topic), ["--runner=DirectRunner"])
    assert summary.messages_in == 500 + len(MALFORMED)
    assert summary.events_out == 500
    assert summary.dead_letters == len(MALFORMED)
    assert summary.messages_outside_window == 1
    assert summary.balanced
    expected_reasons: dict[str, int] = {}
    for _, reason in MALFORMED:
        expected_reasons[reason.value] = expected_reasons.get(reason.value, 0) + 1
    assert summary.dead_letters_by_reason == dict(sorted(expected_reasons.items()))


def test_dead_letters_reach_the_dlq_topic_with_original_bytes_and_coordinates(broker):
    topic = new_topic(broker.bootstrap_servers, partitions=2)
    records = publish_day(broker.bootstrap_servers, topic, good=20)
    run_read(read_options(broker.bootstrap_servers, topic), ["--runner=DirectRunner"])
    letters = consume_all(broker.bootstrap_servers, dlq_topic(topic))
    by_key = {m.key(): m for m in letters}
    assert len(letters) == len(MALFORMED)
    for j, (value, reason) in enumerate(MALFORMED):
        letter = by_key[f"bad_{j}".encode()]
        headers = {k.removeprefix(HEADER_PREFIX): v.decode() for k, v in letter.headers()}
        assert letter.value() == value
        assert headers["reason"] == reason.value
        assert headers["topic"] == topic
        assert int(headers["offset"]) >= 0 and int(headers["partition"]) in (0, 1)
    assert {r[0] for r in records if r[0].startswith(b"bad_")} == set(by_key)


def test_committed_read_is_not_read_again_by_the_same_group(broker, capsys):
    topic = new_topic(broker.bootstrap_servers, partitions=2)
    publish_day(broker.bootstrap_servers, topic, good=30)
    args = [
        "--bootstrap-servers",
        broker.bootstrap_servers,
        "--topic",
        topic,
        *WINDOW,
        "--group-id",
        f"g-{topic}",
        "--commit",
        "--no-dlq",
    ]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "events decoded" in first and "30" in first
    produce(
        broker.bootstrap_servers,
        topic,
        [(b"new", json.dumps(ledger_event(7, DAY)).encode(), millis(DAY))],
    )
    summary = run_read(
        read_options(broker.bootstrap_servers, topic, "--group-id", f"g-{topic}", "--no-dlq"),
        ["--runner=DirectRunner"],
    )
    assert (summary.messages_in, summary.events_out) == (1, 1)


def test_unknown_topic_is_a_usage_error(broker, capsys):
    assert main(["--bootstrap-servers", broker.bootstrap_servers, "--topic", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_unreachable_broker_exits_3(capsys):
    assert (
        main(["--bootstrap-servers", "127.0.0.1:1", "--topic", "x", "--broker-timeout", "2"]) == 3
    )
    assert "broker unavailable" in capsys.readouterr().err


def test_out_writes_every_decoded_event_as_parquet(broker, tmp_path):
    from transforms.decode import DECODED_LEDGER_EVENT
    from transforms.staging import read_staged

    topic = new_topic(broker.bootstrap_servers, partitions=2)
    publish_day(broker.bootstrap_servers, topic, good=40)
    for _ in range(2):
        run_read(
            read_options(broker.bootstrap_servers, topic, "--no-dlq", "--out", str(tmp_path)),
            ["--runner=DirectRunner"],
        )
    events = read_staged(str(tmp_path), "events", DECODED_LEDGER_EVENT)
    assert sorted(events.column("event_id").to_pylist()) == [f"evt_{i:06d}" for i in range(40)]
