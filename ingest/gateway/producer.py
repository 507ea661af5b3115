"""An idempotent Kafka producer whose deliveries can be awaited.

Delivery reports are polled on the event loop itself, every millisecond while any is
outstanding, rather than by a thread: a polling thread has to take the GIL from the
loop for every report and hand each result back through the loop's wake-up pipe,
which at hundreds of uploads per second costs the loop more than the polling does.
"""

from __future__ import annotations

import asyncio
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from lakehouse_edge.rules import MAX_ENVELOPE_BYTES

POLL_INTERVAL_SECONDS = 0.001
# Room for the record's own framing above the largest envelope (the broker allows 4 MiB).
MESSAGE_MAX_BYTES = 2 * MAX_ENVELOPE_BYTES


class KafkaUnavailable(Exception):
    """The broker did not acknowledge in time."""


class MessageTooLarge(Exception):
    """Kafka refuses a message this large; retrying cannot help."""


class AsyncProducer:
    """`delivery_timeout` bounds how long librdkafka tries a message: after a failure
    is reported the message is not sent later behind the caller's back."""

    def __init__(self, config: dict[str, Any], delivery_timeout: float = 10.0) -> None:
        self._producer = Producer(
            {
                **config,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 2,
                "compression.type": "lz4",
                "message.max.bytes": MESSAGE_MAX_BYTES,
                "message.timeout.ms": int(delivery_timeout * 1000),
            }
        )
        self._outstanding = 0
        self._timer: asyncio.TimerHandle | None = None

    async def send(self, topic: str, key: bytes, value: bytes) -> tuple[int, int]:
        """Produce and wait for the broker's acknowledgement: (partition, offset)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, int]] = loop.create_future()

        def delivered(error: KafkaError | None, message: Message) -> None:
            # Runs inside poll(), on the loop's thread.
            self._outstanding -= 1
            if future.done():  # the sender gave up waiting
                return
            if error is not None and error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                future.set_exception(MessageTooLarge(str(error)))
            elif error is not None:
                future.set_exception(KafkaUnavailable(str(error)))
            else:
                future.set_result((message.partition() or 0, message.offset() or 0))

        try:
            self._producer.produce(topic, value=value, key=key, on_delivery=delivered)
        except BufferError as exc:
            raise KafkaUnavailable("the producer queue is full") from exc
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                raise MessageTooLarge(str(exc)) from exc
            raise KafkaUnavailable(str(exc)) from exc
        self._outstanding += 1
        if self._timer is None:
            self._timer = loop.call_later(POLL_INTERVAL_SECONDS, self._poll, loop)
        return await future

    def _poll(self, loop: asyncio.AbstractEventLoop) -> None:
        self._producer.poll(0)
        self._timer = (
            loop.call_later(POLL_INTERVAL_SECONDS, self._poll, loop) if self._outstanding else None
        )

    async def available(self, timeout: float = 2.0) -> bool:
        """Whether the cluster answers a metadata request (asked off the event loop)."""
        try:
            metadata = await asyncio.to_thread(self._producer.list_topics, timeout=timeout)
        except Exception:  # any failure to reach the cluster means unavailable
            return False
        return bool(metadata.brokers)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._producer.flush(10)
