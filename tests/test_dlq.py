"""``payrecon dlq list|show|replay|park`` on the real broker.

Dead letters come from the real decode path: ``payrecon read`` where the test is about what
a job does next, the same decoder without Beam (``tests.dlq_helpers``) elsewhere.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import cli
from pipelines.dlq_inspect import printable
from pipelines.dlq_replay import Kafka, Replayer, ReplayOutcome, choose
from pipelines.read import ReadOptions, run_read
from schemas.dead_letter import dlq_topic
from schemas.dlq_replay import DLQ_REPLAY_V1, parked_topic, replayed_topic
from tests.dlq_helpers import dead_letter_topic, replays_in, run_dlq
from tests.kafka_helpers import DAY, consume_all, encode, ledger_event, millis, new_topic, produce
from tests.test_decode import MALFORMED
from transforms.dlq_io import topic_partitions
from transforms.dlq_letters import ReplayRecord, load_state, read_dead_letters

WINDOW = ["--window-start", "2026-11-20T00:00:00Z", "--window-end", "2026-11-21T00:00:00Z"]
BAD_TIME = {**ledger_event(900, DAY), "occurred_at": "2026-11-20 25:00"}
FIXED = ledger_event(900, DAY + timedelta(hours=10))


@dataclass
class Ledger:
    topic: str
    dlq: str
    group: str


def publish(bootstrap: str, good: int, bad: list[bytes], partitions: int = 2) -> str:
    topic = new_topic(bootstrap, partitions=partitions)
    records = [
        (f"ord_{i}".encode(), encode(ledger_event(i, DAY + timedelta(minutes=i))), millis(DAY))
        for i in range(good)
    ]
    records += [(f"bad_{j}".encode(), value, millis(DAY) + j) for j, value in enumerate(bad)]
    produce(bootstrap, topic, records)
    return topic


def read_window(bootstrap: str, ledger: Ledger):
    """``payrecon read`` of the day for the ledger's group, committing what it read."""
    args = ["--bootstrap-servers", bootstrap, "--topic", ledger.topic, *WINDOW]
    options = PipelineOptions([*args, "--group-id", ledger.group, "--commit"]).view_as(ReadOptions)
    return run_read(options, ["--runner=DirectRunner"])


def read_job_ledger(bootstrap: str, bad: list[bytes]) -> Ledger:
    topic = publish(bootstrap, good=20, bad=bad)
    ledger = Ledger(topic, dlq_topic(topic), f"g-{topic}")
    summary = read_window(bootstrap, ledger)
    assert (summary.events_out, summary.dead_letters) == (20, len(bad))
    return ledger


@pytest.fixture(scope="module")
def every_malformed_kind(broker) -> Ledger:
    """A ledger topic with every malformed kind, dead-lettered by ``payrecon read``."""
    return read_job_ledger(broker.bootstrap_servers, [value for value, _ in MALFORMED])


@pytest.fixture
def small_dlq(broker) -> Ledger:
    """Three dead letters (not_json, bad_timestamp, not_an_object) made by the decoder."""
    topic = publish(broker.bootstrap_servers, good=5, bad=[b"{oops", encode(BAD_TIME), b"[1]"])
    assert dead_letter_topic(broker.bootstrap_servers, topic) == 3
    return Ledger(topic, dlq_topic(topic), f"g-{topic}")


def shown(capsys, bootstrap: str, dlq: str, *selection: str) -> list[dict]:
    run = run_dlq(capsys, bootstrap, "show", "--topic", dlq, "--json", *selection)
    assert run.code == 0, run.err
    return run.json_lines()


def test_list_counts_dead_letters_by_reason_as_injected(broker, capsys, every_malformed_kind):
    run = run_dlq(
        capsys, broker.bootstrap_servers, "list", "--topic", every_malformed_kind.dlq, "--json"
    )
    assert run.code == 0, run.err
    [summary] = json.loads(run.out)["topics"]
    injected = Counter(reason.value for _, reason in MALFORMED)
    assert {r: c["dead_letters"] for r, c in summary["by_reason"].items()} == injected
    assert summary["by_job"] == {"read": len(MALFORMED)}
    assert (summary["messages"], summary["waiting"], summary["replayed"]) == (
        len(MALFORMED),
        len(MALFORMED),
        0,
    )
    text = run_dlq(capsys, broker.bootstrap_servers, "list", "--topic", every_malformed_kind.dlq)
    assert f"{len(MALFORMED)} dead letters of {len(MALFORMED)} messages" in text.out


def test_show_prints_the_original_bytes_exactly(broker, capsys, every_malformed_kind):
    letters = shown(
        capsys, broker.bootstrap_servers, every_malformed_kind.dlq, "--all", "--limit", "100"
    )
    values = {base64.b64decode(x["value_base64"]) for x in letters}
    assert values == {value for value, _ in MALFORMED}
    [not_utf8] = [x for x in letters if x["value_text"] is None]
    assert base64.b64decode(not_utf8["value_base64"]) == b"\xff\xfe not utf-8"
    assert not_utf8["value_bytes"] == len(b"\xff\xfe not utf-8")
    assert not_utf8["source"].startswith(every_malformed_kind.topic + "/")
    text = run_dlq(
        capsys,
        broker.bootstrap_servers,
        "show",
        "--topic",
        every_malformed_kind.dlq,
        "--reason",
        "not_an_object",
    ).out
    assert "\n[1, 2, 3]\n" in text and "9 bytes, UTF-8" in text
    assert "payrecon.dlq.reason: not_an_object" in text


def test_fixed_and_replayed_dead_letter_is_processed_once(broker, capsys, tmp_path):
    bootstrap = broker.bootstrap_servers
    ledger = read_job_ledger(bootstrap, [b"{oops", encode(BAD_TIME), b"[1]"])
    [letter] = shown(capsys, bootstrap, ledger.dlq, "--reason", "bad_timestamp")
    fixes = tmp_path / "fixes.jsonl"
    fix = {"partition": letter["partition"], "offset": letter["offset"], "value": FIXED}
    fixes.write_text(json.dumps(fix) + "\n")
    replay = ["replay", "--topic", ledger.dlq, "--fixed-file", str(fixes)]

    first = run_dlq(capsys, bootstrap, *replay)
    assert first.code == 0, first.err
    assert first.out.startswith("replayed ")
    [copy] = replays_in(bootstrap, ledger.topic)
    assert copy.value == json.dumps(FIXED, separators=(",", ":")).encode()
    assert copy.key == base64.b64decode(letter["key_base64"])
    assert f"{copy.topic}/{copy.partition}" == letter["source"].rsplit("/", 1)[0]
    assert copy.header("payrecon.replay.of") == letter["dead_letter"].encode()
    assert copy.header("payrecon.replay.source") == letter["source"].encode()
    assert copy.header("payrecon.replay.fixed") == b"true"

    after = read_window(bootstrap, ledger)
    assert (after.messages_in, after.events_out, after.dead_letters) == (1, 1, 0)

    again = run_dlq(capsys, bootstrap, *replay)
    assert again.code == 0, again.err
    assert again.out.startswith("already replayed ")
    assert len(replays_in(bootstrap, ledger.topic)) == 1
    assert read_window(bootstrap, ledger).messages_in == 0
    assert len(consume_all(bootstrap, ledger.dlq)) == 3


def test_rerun_dead_letters_of_one_message_are_replayed_once(broker, capsys, small_dlq):
    bootstrap = broker.bootstrap_servers
    dead_letter_topic(bootstrap, small_dlq.topic)  # a second run of the window
    [summary] = json.loads(
        run_dlq(capsys, bootstrap, "list", "--topic", small_dlq.dlq, "--json").out
    )["topics"]
    assert (summary["dead_letters"], summary["messages"]) == (6, 3)
    run = run_dlq(capsys, bootstrap, "replay", "--topic", small_dlq.dlq, "--all")
    assert run.code == 0, run.err
    assert len(replays_in(bootstrap, small_dlq.topic)) == 3


def _replayer(bootstrap: str, ledger: Ledger, reason: str):
    """The replay engine on one dead letter, to stop it between its steps as a crash would."""
    kafka = Kafka(bootstrap, {}, 10.0)
    topics = topic_partitions(bootstrap)
    letters = [x for x in read_dead_letters(bootstrap, ledger.dlq, 1) if x.reason == reason]
    state = load_state(bootstrap, ledger.dlq, topics)
    new, pending = choose(letters, state, {}, topics, False, ReplayOutcome())
    assert (len(new), pending) == (1, [])
    return Replayer(kafka, ledger.dlq), new


def test_replay_interrupted_after_publishing_is_recorded_not_published_again(
    broker, capsys, small_dlq
):
    bootstrap = broker.bootstrap_servers
    replayer, new = _replayer(bootstrap, small_dlq, "not_json")
    ends = replayer.mark_pending(new)
    replayer.publish(new, ends, ReplayOutcome())  # ... and the process dies here
    listed = json.loads(run_dlq(capsys, bootstrap, "list", "--topic", small_dlq.dlq, "--json").out)
    assert listed["topics"][0]["replay_pending"] == 1

    run = run_dlq(capsys, bootstrap, "replay", "--topic", small_dlq.dlq, "--reason", "not_json")
    assert run.code == 0, run.err
    assert run.out.startswith("recovered ")
    assert len(replays_in(bootstrap, small_dlq.topic)) == 1
    again = run_dlq(capsys, bootstrap, "replay", "--topic", small_dlq.dlq, "--reason", "not_json")
    assert again.out.startswith("already replayed ")


def test_replay_interrupted_before_publishing_publishes_once(broker, capsys, small_dlq):
    bootstrap = broker.bootstrap_servers
    replayer, new = _replayer(bootstrap, small_dlq, "not_json")
    replayer.mark_pending(new)  # ... and the process dies here
    run = run_dlq(capsys, bootstrap, "replay", "--topic", small_dlq.dlq, "--reason", "not_json")
    assert run.code == 0, run.err
    assert run.out.startswith("replayed ")
    assert len(replays_in(bootstrap, small_dlq.topic)) == 1


def test_parked_dead_letter_is_skipped_by_replay_and_shown_by_list(broker, capsys, small_dlq):
    bootstrap = broker.bootstrap_servers
    park = ["park", "--topic", small_dlq.dlq, "--reason", "not_an_object", "--note", "upstream bug"]
    assert run_dlq(capsys, bootstrap, *park).out.startswith("parked ")
    assert run_dlq(capsys, bootstrap, *park).out.startswith("already parked ")
    [copy] = consume_all(bootstrap, parked_topic(small_dlq.dlq))
    headers = dict(copy.headers())
    assert (copy.value(), headers["payrecon.park.reason"]) == (b"[1]", b"upstream bug")
    assert headers["payrecon.dlq.reason"] == b"not_an_object"

    listed = json.loads(run_dlq(capsys, bootstrap, "list", "--topic", small_dlq.dlq, "--json").out)
    assert listed["topics"][0]["by_reason"]["not_an_object"]["parked"] == 1
    replay = run_dlq(capsys, bootstrap, "replay", "--topic", small_dlq.dlq, "--all", "--json")
    results = {x["result"] for x in replay.json_lines()}
    assert results == {"replayed", "skipped_parked"}
    assert len(replays_in(bootstrap, small_dlq.topic)) == 2
    forced = run_dlq(
        capsys, bootstrap, "replay", "--topic", small_dlq.dlq, "--all", "--include-parked", "--json"
    )
    assert Counter(x["result"] for x in forced.json_lines()) == {
        "replayed": 1,
        "already_replayed": 2,
    }
    assert len(replays_in(bootstrap, small_dlq.topic)) == 3


def test_a_replay_that_fails_again_is_counted_and_can_be_parked(broker, capsys, small_dlq):
    bootstrap = broker.bootstrap_servers
    run_dlq(capsys, bootstrap, "replay", "--topic", small_dlq.dlq, "--reason", "not_json")
    [copy] = replays_in(bootstrap, small_dlq.topic)
    next_run = {copy.partition: copy.offset}  # the next run reads from the replay on
    assert dead_letter_topic(bootstrap, small_dlq.topic, next_run) == 1
    listed = json.loads(run_dlq(capsys, bootstrap, "list", "--topic", small_dlq.dlq, "--json").out)
    assert listed["topics"][0]["failed_again"] == 1
    run = run_dlq(capsys, bootstrap, "park", "--topic", small_dlq.dlq, "--failed-again", "--json")
    assert run.code == 0, run.err
    [parked] = run.json_lines()
    assert (parked["result"], parked["reason"]) == ("parked", "not_json")
    [copy] = consume_all(bootstrap, parked_topic(small_dlq.dlq))
    assert dict(copy.headers())["payrecon.park.reason"].endswith(b"(--failed-again)")


def test_dry_runs_write_nothing(broker, capsys, small_dlq):
    bootstrap = broker.bootstrap_servers
    replay = run_dlq(capsys, bootstrap, "replay", "--topic", small_dlq.dlq, "--all", "--dry-run")
    assert replay.out.splitlines()[-1] == "replay: 3 would replay"
    park = run_dlq(capsys, bootstrap, "park", "--topic", small_dlq.dlq, "--all", "--dry-run")
    assert park.out.startswith("would park ")
    assert replays_in(bootstrap, small_dlq.topic) == []
    topics = topic_partitions(bootstrap)
    assert parked_topic(small_dlq.dlq) not in topics
    assert replayed_topic(small_dlq.dlq) not in topics


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["replay", "--topic", "{dlq}"], "say what to replay"),
        (["show", "--topic", "{dlq}", "--older-than", "3 days"], "not a duration"),
        (["show", "--topic", "{dlq}", "--offset", "-1"], "negative"),
        (["show", "--topic", "{dlq}", "--offset", "9999"], "no dead letter at"),
        (["show", "--topic", "{dlq}", "--reason", "not_jsn"], "is not a reason"),
        (["show", "--topic", "{topic}"], "did you mean"),
        (["list", "--topic", "nope.dlq"], "does not exist"),
        (["replay", "--topic", "{dlq}", "--fixed-file", "{bad_fix}"], "line 1"),
        (["park", "--topic", "{dlq}", "--all", "--kafka-config", "oops"], "key=value"),
        (["remove", "--topic", "{dlq}"], "invalid choice"),
    ],
)
def test_bad_usage_exits_2_with_one_line(
    broker, capsys, tmp_path, every_malformed_kind, args, says
):
    bad_fix = tmp_path / "fix.jsonl"
    bad_fix.write_text('{"offset": 0, "vaule": "x"}\n')
    names = {"dlq": every_malformed_kind.dlq, "topic": every_malformed_kind.topic}
    run = run_dlq(
        capsys, broker.bootstrap_servers, *[a.format(bad_fix=bad_fix, **names) for a in args]
    )
    assert run.code == 2
    assert run.err.count("\n") == 1 and says in run.err, run.err
    assert run.out == ""


def test_unreachable_broker_exits_3(capsys):
    run = run_dlq(capsys, "127.0.0.1:1", "list", "--broker-timeout", "2")
    assert run.code == 3
    assert run.err.count("\n") == 1 and "broker unavailable" in run.err


def test_bytes_are_shown_exactly_and_safely():
    assert printable(b'{"a": 1}') == ("8 bytes, UTF-8", '{"a": 1}')
    label, text = printable(b"evil\x1b[2J\nline")
    assert label.endswith("JSON-escaped") and json.loads(text).encode() == b"evil\x1b[2J\nline"
    label, text = printable(b"\xff\x00")
    assert label == "2 bytes, not UTF-8, base64" and base64.b64decode(text) == b"\xff\x00"


def test_dlq_is_a_payrecon_command(broker, capsys, small_dlq):
    assert cli.main(["dlq", "list", "--bootstrap-servers", broker.bootstrap_servers]) == 0
    assert f"{small_dlq.dlq}: 3 dead letters of 3 messages" in capsys.readouterr().out


def test_replay_records_follow_their_schema():
    assert set(ReplayRecord.__dataclass_fields__) == set(DLQ_REPLAY_V1.names)
