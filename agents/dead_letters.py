"""Dead-lettering: an input message that fails validation is kept, with the reason, and counted."""

from __future__ import annotations

import logging

from faust.types import Message
from pydantic import ValidationError

from layer.app import app, topics
from layer.clock import now_ms
from layer.events import DeadLetter

__all__ = ["dead_letter"]

log = logging.getLogger(__name__)


def _reason(exc: ValidationError) -> str:
    """pydantic's first complaint, as one line (`field: message`)."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "message"
    return f"{where}: {first['msg']} ({exc.error_count()} error(s))"


async def dead_letter(message: Message, exc: ValidationError) -> None:
    """Send `message` to the dead-letter topic with the validation error as the reason."""
    value, encoding = DeadLetter.text_or_base64(message.value)
    key, _ = DeadLetter.text_or_base64(message.key)
    letter = DeadLetter(
        reason=_reason(exc),
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=key,
        value=value,
        value_encoding=encoding,
        dead_lettered_at_ms=now_ms(),
    )
    await topics.dead_letters.send(key=message.key, value=letter.model_dump_json().encode())
    app.services.metrics.dead_letters.inc()
    log.warning(
        "dead-lettered %s[%d]@%d: %s",
        message.topic,
        message.partition,
        message.offset,
        letter.reason,
    )
