"""Command line for the emulator (`python -m layer.emulator`, `layer emulator`).

    python -m layer.emulator --port 8787 --index-delay-ms 500 \\
        --fault 'route=metadata,namespace=docs,status=500,times=2'

`--fault` takes comma-separated `key=value` pairs with the fields of `FaultRule`: `route`,
`namespace`, `status`, `message`, `latency_ms`, `hang`, `retry_after_ms`, `times`.
Once listening, one line `turbopuffer emulator listening on <url>` goes to stdout (with the
real port when `--port 0`). SIGINT and SIGTERM stop it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from pydantic import ValidationError

from .faults import FaultRule, parse_fault_spec
from .server import DEV_API_KEY, Emulator
from .store import DEFAULT_MAX_TOP_K

__all__ = ["main"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787


def _fault(spec: str) -> FaultRule:
    try:
        return parse_fault_spec(spec)
    except (ValueError, ValidationError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="layer emulator",
        description="Run a turbopuffer emulator (HTTP API compatible with the turbopuffer SDK).",
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="address to bind (default %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="port to bind; 0 picks a free one (default %(default)s)",
    )
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help=f"accepted bearer key (repeatable; default: the dev key {DEV_API_KEY!r})",
    )
    parser.add_argument(
        "--other-org-key",
        action="append",
        dest="other_org_keys",
        default=[],
        metavar="KEY",
        help="a key of a second organisation, which has namespaces of its own (repeatable)",
    )
    parser.add_argument(
        "--index-delay-ms",
        type=int,
        default=0,
        help="time after a write before it can be indexed (default %(default)s)",
    )
    parser.add_argument(
        "--index-rate",
        type=float,
        default=None,
        metavar="ROWS_PER_S",
        help="indexing throughput in rows/s once writes are eligible (default: unlimited)",
    )
    parser.add_argument(
        "--copy-duration-ms",
        type=int,
        default=0,
        help="how long a copy_from_namespace takes; above 0, `Prefer: respond-async` "
        "gets a 202 and an operation to poll (default %(default)s)",
    )
    parser.add_argument(
        "--max-top-k",
        type=int,
        default=DEFAULT_MAX_TOP_K,
        help="largest top_k/limit a query may ask for (default %(default)s)",
    )
    parser.add_argument(
        "--seed-namespaces",
        type=int,
        default=0,
        metavar="N",
        help="start with N empty, indexed namespaces named PREFIX0000000… (benchmarks)",
    )
    parser.add_argument(
        "--seed-prefix",
        default="seeded-",
        metavar="PREFIX",
        help="name prefix of the seeded namespaces (default %(default)s)",
    )
    parser.add_argument(
        "--fault",
        action="append",
        type=_fault,
        default=[],
        metavar="SPEC",
        help="fault rule as key=value pairs, e.g. 'route=query,status=500,times=1' (repeatable)",
    )
    return parser


async def _serve(args: argparse.Namespace) -> None:
    emulator = Emulator(
        args.api_keys or [DEV_API_KEY],
        other_org_keys=args.other_org_keys,
        host=args.host,
        port=args.port,
        index_delay_ms=args.index_delay_ms,
        index_rate_rows_per_s=args.index_rate,
        max_top_k=args.max_top_k,
        copy_duration_ms=args.copy_duration_ms,
        faults=args.fault,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if args.seed_namespaces:
        names = (f"{args.seed_prefix}{i:07d}" for i in range(args.seed_namespaces))
        print(f"seeded {emulator.store.seed(names)} namespaces", flush=True)
    await emulator.start()
    print(f"turbopuffer emulator listening on {emulator.url}", flush=True)
    if not args.api_keys:
        # Only the public dev default is ever printed, never a key the user supplied.
        print(f"API key: {DEV_API_KEY}", flush=True)
    try:
        await stop.wait()
    finally:
        await emulator.stop()


def main(argv: list[str] | None = None) -> None:
    """Parse `argv` (default: sys.argv) and serve until SIGINT/SIGTERM."""
    args = _parser().parse_args(argv)
    if args.index_delay_ms < 0 or (args.index_rate is not None and args.index_rate <= 0):
        _parser().error("--index-delay-ms must be >= 0 and --index-rate > 0")
    if args.copy_duration_ms < 0:
        _parser().error("--copy-duration-ms must be >= 0")
    if args.seed_namespaces < 0:
        _parser().error("--seed-namespaces must be >= 0")
    asyncio.run(_serve(args))
