"""Wall-clock epoch milliseconds: the one clock Layer's state is written in."""

import time

__all__ = ["now_ms"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000
