"""Process-wide I/O objects shared by agents and views (one upstream connection pool)."""

from __future__ import annotations

from layer.app import settings
from layer.upstream import Upstream

__all__ = ["upstream"]

upstream = Upstream(settings.upstream_url, timeout_ms=settings.upstream_timeout_ms)
