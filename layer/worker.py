"""The worker's composition: importing this registers every agent, table, timer and view."""

from __future__ import annotations

import agents.ticks  # noqa: F401  (registers the watcher)
import agents.writes  # noqa: F401  (registers the writes agent)
import api.health  # noqa: F401
import api.metadata  # noqa: F401
import api.metrics  # noqa: F401
import api.server  # noqa: F401  (middlewares: errors, auth)
from layer.app import app

__all__ = ["app"]
