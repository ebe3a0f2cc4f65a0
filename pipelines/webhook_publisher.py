"""Publishing from an asyncio web app, one message at a time, answered by the broker's ack.

The webhook receiver must not tell Stripe "received" before the event is durable, so
:meth:`AckedPublisher.publish` returns only once librdkafka's delivery report for that
message arrived: ``True`` if the broker acknowledged it (``acks=all``, idempotent producer),
``False`` if delivery failed or did not finish within ``ack_timeout_s``. A background thread
serves the delivery reports and hands each to the event loop that is waiting for it.

``message.timeout.ms`` is set to the ack timeout, so librdkafka itself gives up on a message
about when the caller stops waiting: a message reported as failed is (almost always) not
retried behind the caller's back. A late delivery after a failure answer is harmless: the
sender retries, and the consumer dedupes by event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from transforms.kafka_config import producer_config

log = logging.getLogger(__name__)

_POLL_S = 0.05
_MARGIN_S = 1.0  # waited beyond message.timeout.ms for the final delivery report


class AckedPublisher:
    """An idempotent producer whose ``publish`` waits for the broker's acknowledgement.

    ``start()`` before use and ``close()`` after (the app's lifespan does both). Thread-safe:
    any number of requests may publish concurrently.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        ack_timeout_s: float = 5.0,
        kafka_config: dict[str, Any] | None = None,
    ):
        self.topic = topic
        self.ack_timeout_s = ack_timeout_s
        self._config = producer_config(
            bootstrap_servers,
            {
                "linger.ms": 2,
                "partitioner": "murmur2_random",
                **(kafka_config or {}),
                "message.timeout.ms": max(1, int(ack_timeout_s * 1000)),
                "error_cb": self._on_error,
            },
        )
        self._producer: Producer | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._fatal = False

    def start(self) -> None:
        self._producer = Producer(self._config)
        self._stop.clear()
        self._poller = threading.Thread(target=self._poll, name="webhook-acks", daemon=True)
        self._poller.start()

    def close(self, flush_timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join()
            self._poller = None
        if self._producer is not None:
            self._producer.flush(flush_timeout_s)
            self._producer = None

    async def publish(
        self,
        key: bytes,
        value: bytes,
        *,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> bool:
        """True once the broker acknowledged the message; False if it did not in time."""
        loop = asyncio.get_running_loop()
        acked: asyncio.Future[bool] = loop.create_future()

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                log.warning("stripe event %s not acknowledged: %s", key.decode(), err)
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
                loop.call_soon_threadsafe(_settle, acked, err is None)

        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": on_delivery}
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        if headers:
            kwargs["headers"] = headers
        try:
            self._producer_now().produce(self.topic, **kwargs)
        except (BufferError, KafkaException) as exc:
            log.warning("stripe event %s not produced: %s", key.decode(), exc)
            return False
        try:
            return await asyncio.wait_for(acked, self.ack_timeout_s + _MARGIN_S)
        except TimeoutError:
            log.warning("stripe event %s: no delivery report in time", key.decode())
            return False

    def _producer_now(self) -> Producer:
        """The producer, replaced first if librdkafka declared it unusable (fatal error)."""
        with self._lock:
            if self._producer is None:
                raise KafkaException(KafkaError(KafkaError._STATE, "publisher is not started"))
            if self._fatal:
                log.error("replacing the Kafka producer after a fatal error")
                self._producer.flush(0)
                self._producer = Producer(self._config)
                self._fatal = False
            return self._producer

    def _poll(self) -> None:
        while not self._stop.is_set():
            producer = self._producer
            if producer is not None:
                producer.poll(_POLL_S)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = True
        log.debug("kafka: %s", err)


def _settle(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)
