"""Pure response shaping: one function per body, shared by every view that shows it.

`layer_block` is the only place the `layer` object of a namespace is built, so the
metadata route and the listing can never disagree about "since when" a namespace is stable.
"""

from __future__ import annotations

from typing import Any

from tables.freshness import Freshness, IndexStatus

__all__ = ["layer_block", "metadata_body"]


def layer_block(state: Freshness | None) -> dict[str, Any]:
    """The `layer` object of a namespace.

    - `stable_as_of`: epoch ms of the latest moment the index was observed caught up;
      null before the watcher has observed the namespace stable (cold start).
    - `is_stable`: the latest poll saw `up-to-date` and no write is known after it;
      false on cold start.
    - `status`: `unknown` | `updating` | `stable`; `last_write_ms`, `last_poll_ms`: null
      when not seen yet.
    """
    if state is None:
        return {
            "stable_as_of": None,
            "is_stable": False,
            "status": IndexStatus.UNKNOWN.value,
            "last_write_ms": None,
            "last_poll_ms": None,
        }
    return {
        "stable_as_of": state.stable_as_of,
        "is_stable": state.is_stable,
        "status": state.status,
        "last_write_ms": state.last_write_ms,
        "last_poll_ms": state.last_poll_ms,
    }


def metadata_body(upstream_body: dict[str, Any], state: Freshness | None) -> dict[str, Any]:
    """Upstream's metadata verbatim (unknown fields too) plus the `layer` object."""
    return {**upstream_body, "layer": layer_block(state)}
