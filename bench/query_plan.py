"""What deciding a query's stable cut costs the proxy (api/stable_reads.plan_query), in-process.

    .venv/bin/python bench/query_plan.py [--dims 8 128 768 1536] [--number 2000]

For an ANN query (`rank_by: ["vector", "ANN", q]`, top_k 10, `include_attributes:
["title"]`) of each vector dimension, side by side in one run, median of 7 repeats:

- `plan_query` for a *stable* namespace (the common case: sent as it is, a 429 retried
  with the cut),
- `plan_query` for an *updating* one (the query is cut: parsed and written again),
- one `json.loads` + `json.dumps` of the same body: what every query paid before the plan
  parsed only the queries it cuts and built the 429 retry body only on a 429.

`bench/proxy.py` queries 8-dim vectors, where the body is small; a 1,536-dim embedding
query is ~31 KB of JSON. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import random
import timeit
from collections.abc import Callable

from api.stable_reads import plan_query
from tables.freshness import Freshness, IndexStatus, ReadEvidence

REPEATS = 7


def query_body(dim: int) -> bytes:
    vector = [random.uniform(-1, 1) for _ in range(dim)]
    body = {"rank_by": ["vector", "ANN", vector], "top_k": 10, "include_attributes": ["title"]}
    return json.dumps(body).encode()


def median_us(action: Callable[[], object], number: int) -> float:
    times = sorted(timeit.repeat(action, number=number, repeat=REPEATS))
    return times[REPEATS // 2] / number * 1e6


def measure(raw: bytes, number: int) -> tuple[float, float, float]:
    """µs per call: the plan of a stable namespace, of an updating one, a parse + dump."""
    evidence = ReadEvidence()
    stable = Freshness(namespace="n", status=IndexStatus.STABLE.value, stable_as_of=1_000)
    updating = Freshness(namespace="n", status=IndexStatus.UPDATING.value, stable_as_of=1_000)
    return (
        median_us(lambda: plan_query(raw, stable, evidence, stable_reads=True), number),
        median_us(lambda: plan_query(raw, updating, evidence, stable_reads=True), number),
        median_us(lambda: json.dumps(json.loads(raw)).encode(), number),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[8, 128, 768, 1536])
    parser.add_argument("--number", type=int, default=2000, help="calls per repeat")
    args = parser.parse_args()
    print(f"{'dim':>5} {'body B':>7} {'stable µs':>10} {'updating µs':>12} {'loads+dumps µs':>15}")
    for dim in args.dims:
        raw = query_body(dim)
        as_is, cut, both = measure(raw, args.number)
        print(f"{dim:>5} {len(raw):>7} {as_is:>10.1f} {cut:>12.1f} {both:>15.1f}")


if __name__ == "__main__":
    main()
