"""Request counters per route name and per namespace, so tests can assert upstream traffic."""

from __future__ import annotations

from collections import Counter

__all__ = ["RequestStats"]


class RequestStats:
    """Counts every request to a turbopuffer route (control routes are never counted)."""

    def __init__(self) -> None:
        self._routes: Counter[str] = Counter()
        self._namespaces: dict[str, Counter[str]] = {}

    def record(self, route: str, namespace: str | None) -> None:
        self._routes[route] += 1
        if namespace is not None:
            self._namespaces.setdefault(namespace, Counter())[route] += 1

    def count(self, route: str | None = None, namespace: str | None = None) -> int:
        """Requests to `route` (any route when None), limited to `namespace` when given."""
        counter = self._routes if namespace is None else self._namespaces.get(namespace, Counter())
        return counter.total() if route is None else counter[route]

    def reset(self) -> None:
        self._routes.clear()
        self._namespaces.clear()

    def snapshot(self) -> dict[str, object]:
        """The `GET /_emulator/stats` body."""
        return {
            "total": self._routes.total(),
            "routes": dict(self._routes),
            "namespaces": {ns: dict(c) for ns, c in self._namespaces.items()},
        }
