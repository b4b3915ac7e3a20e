"""The worker's composition: importing this registers every agent, table, timer and view."""

from __future__ import annotations

import agents.ticks  # noqa: F401  (registers the watcher)
import agents.writes  # noqa: F401  (registers the writes agent)
import api.health  # noqa: F401
import api.listing  # noqa: F401
import api.metadata  # noqa: F401
import api.metrics  # noqa: F401
import api.openapi  # noqa: F401
import api.operations  # noqa: F401
import api.server  # noqa: F401  (middlewares: errors, compression, auth, rate limit)
import api.snapshots  # noqa: F401
from layer.app import app

__all__ = ["app"]
