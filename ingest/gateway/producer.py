"""An idempotent Kafka producer whose deliveries can be awaited."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from confluent_kafka import KafkaError, Message, Producer


class KafkaUnavailable(Exception):
    """The broker did not acknowledge in time."""


class AsyncProducer:
    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(
            {
                **config,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 2,
                "compression.type": "lz4",
                "message.timeout.ms": 10_000,
            }
        )
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kafka-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def send(self, topic: str, key: bytes, value: bytes) -> tuple[int, int]:
        """Produce and wait for the broker's acknowledgement: (partition, offset)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, int]] = loop.create_future()

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                loop.call_soon_threadsafe(_fail, future, KafkaUnavailable(str(error)))
            else:
                result = (message.partition() or 0, message.offset() or 0)
                loop.call_soon_threadsafe(_succeed, future, result)

        try:
            self._producer.produce(topic, value=value, key=key, on_delivery=delivered)
        except BufferError as exc:
            raise KafkaUnavailable("the producer queue is full") from exc
        return await future

    def available(self, timeout: float = 2.0) -> bool:
        try:
            return bool(self._producer.list_topics(timeout=timeout).brokers)
        except Exception:  # any failure to reach the cluster means unavailable
            return False

    def close(self) -> None:
        self._producer.flush(10)
        self._stop.set()
        self._poller.join(2)


def _succeed(future: asyncio.Future[tuple[int, int]], result: tuple[int, int]) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[tuple[int, int]], error: Exception) -> None:
    if not future.done():
        future.set_exception(error)
