"""Write notifications for writes that passed through the proxy: never silently lost.

The write already happened upstream when its notification is due, so a Kafka outage must
not lose it. Notifications wait in a buffer that a background task drains with retries and
exponential backoff. The buffer holds at most one pending notification per namespace
(`on_write` only needs the latest write time, so later ones merge into it) and at most
`LAYER_NOTIFY_BUFFER_NAMESPACES` namespaces; a namespace that does not fit is *unconfirmed*:
this worker reports it `unknown` (never stable) until a later notification for it gets
through. Retries, drops and sends are counted in /metrics.

A notification accepted before the producer is up (or while the broker is away, or before
the topic exists: Layer never lets a broker create it, `layer.kafka_topics`) waits here and
is retried; `has_pending` tells whether one for a namespace is still unacknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict

from aiokafka.errors import KafkaError

from layer.clients import WriteNotifier
from layer.clock import now_ms
from layer.events import OperationStarted, WriteNotification
from layer.kafka_topics import TopicMissingError
from layer.metrics import LayerMetrics

__all__ = ["NotificationBuffer"]

log = logging.getLogger(__name__)

#: First retry delay and its ceiling while Kafka is unreachable.
RETRY_INITIAL_S = 0.2
RETRY_MAX_S = 10.0
#: How long one send may take before it counts as failed (and is retried).
SEND_TIMEOUT_S = 10.0
#: How long the first notification of a burst waits for others (far below the lag budget).
LINGER_S = 0.005
#: Notifications sent in one go at most.
MAX_BATCH = 500

#: Failures of a send that are the broker's or the topic's, retried without a traceback.
#: (`asyncio.TimeoutError` is `TimeoutError` on Python >= 3.11.)
DELIVERY_ERRORS = (KafkaError, OSError, TimeoutError, TopicMissingError)


class NotificationBuffer:
    """Buffers proxied-write notifications and delivers them to `{prefix}.writes`."""

    def __init__(
        self, bootstrap: str, *, topic_prefix: str, max_namespaces: int, metrics: LayerMetrics
    ) -> None:
        self._bootstrap = bootstrap
        self._metrics = metrics
        self._topic_prefix = topic_prefix
        self.max_namespaces = max_namespaces
        self._pending: OrderedDict[str, WriteNotification] = OrderedDict()
        self._unconfirmed: set[str] = set()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._notifier: WriteNotifier | None = None

    def submit(
        self,
        namespace: str,
        *,
        rows: int | None,
        body_bytes: int,
        operation: OperationStarted | None = None,
    ) -> None:
        """Queue a notification for a write upstream just acknowledged (or, with `operation`,
        accepted to run asynchronously: the notification says so, and Layer follows it)."""
        note = WriteNotification(
            namespace=namespace,
            written_at_ms=now_ms(),
            rows=rows,
            bytes=body_bytes,
            source="proxy",
            event_id=uuid.uuid4().hex,
            operations_started=(operation,) if operation is not None else None,
        )
        earlier = self._pending.get(namespace)
        if earlier is not None:
            operations = (*(earlier.operations_started or ()), *(note.operations_started or ()))
            note = note.model_copy(
                update={
                    "rows": (earlier.rows or 0) + (rows or 0),
                    "bytes": (earlier.bytes or 0) + body_bytes,
                    "operations_started": operations or None,
                }
            )
        elif len(self._pending) >= self.max_namespaces:
            self._metrics.notify_dropped.inc()
            self._unconfirmed.add(namespace)
            log.error("notification buffer full: %s reported unknown until it drains", namespace)
            return
        self._pending[namespace] = note
        self._metrics.notify_pending.set(len(self._pending))
        self._wakeup.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain_forever())

    def unconfirmed(self, namespace: str) -> bool:
        """True if a write's notification for `namespace` could not be buffered."""
        return namespace in self._unconfirmed

    def has_pending(self, namespace: str) -> bool:
        """True while a notification for `namespace` was accepted but Kafka has not yet
        acknowledged it (waiting, or being sent)."""
        return namespace in self._pending

    def pending(self) -> int:
        return len(self._pending)

    async def _send(self, *notes: WriteNotification) -> None:
        if self._notifier is None:
            notifier = WriteNotifier(self._bootstrap, topic_prefix=self._topic_prefix)
            try:
                await asyncio.wait_for(notifier.start(), SEND_TIMEOUT_S)
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(notifier.stop(), SEND_TIMEOUT_S)
                raise
            self._notifier = notifier
        await asyncio.wait_for(self._notifier.send(*notes), SEND_TIMEOUT_S)

    async def _drain_forever(self) -> None:
        delay = RETRY_INITIAL_S
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            # Let a burst gather: writes to one namespace merge, the rest share one request.
            await asyncio.sleep(LINGER_S)
            while self._pending:
                batch = list(self._pending.items())[:MAX_BATCH]
                try:
                    await self._send(*(note for _, note in batch))
                except Exception as exc:  # never lose them: a send that failed is retried
                    self._metrics.notify_retries.inc()
                    if isinstance(exc, DELIVERY_ERRORS):
                        log.warning(
                            "%d notifications not delivered (%r); retrying", len(batch), exc
                        )
                    else:
                        log.exception("%d notifications not delivered; retrying", len(batch))
                    await self._reset_notifier()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_S)
                    continue
                delay = RETRY_INITIAL_S
                self._metrics.notify_sent.inc(len(batch))
                for namespace, note in batch:
                    if self._pending.get(namespace) is note:
                        del self._pending[namespace]
                    self._unconfirmed.discard(namespace)
                self._metrics.notify_pending.set(len(self._pending))

    async def _reset_notifier(self) -> None:
        notifier, self._notifier = self._notifier, None
        if notifier is not None:
            try:
                await asyncio.wait_for(notifier.stop(), SEND_TIMEOUT_S)
            except DELIVERY_ERRORS:
                pass

    async def close(self) -> None:
        """Try once more to deliver what is pending, then stop."""
        if self._task is not None:
            self._task.cancel()
        if self._pending:
            try:
                await self._send(*self._pending.values())
                self._pending.clear()
            except DELIVERY_ERRORS:
                log.error("%d write notifications undelivered at shutdown", len(self._pending))
        await self._reset_notifier()
