"""Installs Layer's middlewares on Faust's web server: errors first, then auth."""

from __future__ import annotations

from typing import Any

from api.auth import auth_middleware
from api.errors import error_middleware
from layer.app import app, settings

__all__ = ["install_middlewares"]


def install_middlewares(web: Any) -> None:
    """Called by Faust when its web server is built, before any route is served."""
    web.web_app.middlewares.extend([error_middleware, auth_middleware(settings)])


app.on_webserver_init = install_middlewares  # type: ignore[method-assign]
