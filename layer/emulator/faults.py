"""Fault injection: rules that make matching requests fail, slow down or hang.

A rule matches a request by route name and/or namespace (None matches anything). The first
active matching rule, in the order rules were added, decides what happens:
- `latency_ms`: wait this long first (then apply `status`, or answer normally);
- `hang`: never answer (until the emulator stops), for client timeouts;
- `status`: answer with turbopuffer's error body. Statuses other than 429 carry
  `x-should-retry: false` so the SDK does not retry them; 429 carries `Retry-After` and
  `retry-after-ms` (from `retry_after_ms`) so the SDK retries after a short, known wait.
`times` limits a rule to its first N matches; it is then dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DEFAULT_RETRY_AFTER_MS", "ROUTE_NAMES", "FaultRule", "FaultSet", "parse_fault_spec"]

#: Route names used by fault rules and request counters (the docstring of `server` maps them
#: to paths).
ROUTE_NAMES = frozenset(
    {
        "list",
        "metadata",
        "update_metadata",
        "write",
        "start_copy_from",
        "operation",
        "delete",
        "query",
        "explain_query",
        "hint_cache_warm",
        "schema",
        "update_schema",
    }
)
RATE_LIMITED = 429
#: Retry-After for a 429 rule that does not set one: short, so a retrying SDK stays fast.
DEFAULT_RETRY_AFTER_MS = 10


class FaultRule(BaseModel):
    """What to do to requests that match `route` and `namespace`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    route: str | None = None
    namespace: str | None = None
    status: int | None = Field(default=None, ge=400, le=599)
    message: str = "fault injected by the turbopuffer emulator"
    latency_ms: int = Field(default=0, ge=0)
    hang: bool = False
    retry_after_ms: int | None = Field(default=None, ge=0)
    times: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> FaultRule:
        if self.route is not None and self.route not in ROUTE_NAMES:
            raise ValueError(f"unknown route {self.route!r}; expected one of {sorted(ROUTE_NAMES)}")
        if self.status is None and not self.hang and self.latency_ms == 0:
            raise ValueError("a fault needs a status, latency_ms or hang")
        if self.retry_after_ms is not None and self.status != RATE_LIMITED:
            raise ValueError("retry_after_ms only applies to status 429")
        return self

    def matches(self, route: str, namespace: str | None) -> bool:
        return (self.route is None or self.route == route) and (
            self.namespace is None or self.namespace == namespace
        )


@dataclass
class _ActiveRule:
    id: int
    rule: FaultRule
    remaining: int | None


class FaultSet:
    """The active rules of one emulator."""

    def __init__(self) -> None:
        self._rules: list[_ActiveRule] = []
        self._next_id = 1

    def add(self, rule: FaultRule) -> int:
        rule_id = self._next_id
        self._next_id += 1
        self._rules.append(_ActiveRule(rule_id, rule, rule.times))
        return rule_id

    def remove(self, rule_id: int) -> bool:
        before = len(self._rules)
        self._rules = [r for r in self._rules if r.id != rule_id]
        return len(self._rules) != before

    def clear(self) -> None:
        self._rules.clear()

    def take(self, route: str, namespace: str | None) -> FaultRule | None:
        """The rule that applies to this request, consuming one of its occurrences."""
        for active in self._rules:
            if active.rule.matches(route, namespace):
                if active.remaining is not None:
                    active.remaining -= 1
                    if active.remaining == 0:
                        self._rules.remove(active)
                return active.rule
        return None

    def describe(self) -> list[dict[str, object]]:
        return [
            {"id": r.id, "remaining": r.remaining, "rule": r.rule.model_dump(exclude_none=True)}
            for r in self._rules
        ]


def parse_fault_spec(spec: str) -> FaultRule:
    """A rule from the CLI form `key=value,key=value` (keys are FaultRule's fields)."""
    fields: dict[str, str] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"fault {spec!r}: expected key=value pairs separated by commas")
        fields[key.strip()] = value.strip()
    return FaultRule.model_validate(fields, strict=False)
