"""`layer`: the command line (worker, dev, emulator, notify, watch).

Settings are validated before anything starts, so a bad one is a one-line message naming
the environment variable, not a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from layer.settings import Settings, SettingsError, load_settings

__all__ = ["main"]


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        sys.exit(f"layer: {exc}")


def run_worker(_args: argparse.Namespace) -> None:
    """Run one Faust worker (agents, tables, web server on LAYER_PORT)."""
    settings = _settings_or_exit()
    if settings.turbopuffer_api_key is None:
        sys.exit("layer: invalid setting TURBOPUFFER_API_KEY: the watcher needs an upstream key")
    import logging

    from faust import Worker

    from layer.worker import app

    # httpx logs every request at INFO: too loud for a service that polls continuously.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    Worker(
        app, loglevel=settings.log_level.upper(), redirect_stdouts=False
    ).execute_from_commandline()


def run_dev(_args: argparse.Namespace) -> None:
    """Broker + emulator + worker on this machine (see layer.dev)."""
    from layer.dev import DevStack, DevStackError

    settings = _settings_or_exit()
    try:
        DevStack(settings).run()
    except DevStackError as exc:
        sys.exit(f"layer dev: {exc}")


def run_emulator(args: argparse.Namespace) -> None:
    from layer.emulator.cli import main as emulator_main

    emulator_main(args.emulator_args)


def run_notify(args: argparse.Namespace) -> None:
    """Publish one write notification (after a write made straight to turbopuffer)."""
    from layer.clients import WriteNotifier

    settings = _settings_or_exit()

    async def notify() -> None:
        async with WriteNotifier(
            settings.kafka_broker, topic_prefix=settings.topic_prefix, source="layer-cli"
        ) as notifier:
            note = await notifier.notify(args.namespace, rows=args.rows)
        print(note.model_dump_json(exclude_none=True))

    asyncio.run(notify())


def run_watch(args: argparse.Namespace) -> None:
    """Print one line per stability change until interrupted."""
    from layer.clients import stability_changes

    settings = _settings_or_exit()

    async def watch() -> None:
        async for change in stability_changes(
            settings.kafka_broker,
            topic_prefix=settings.topic_prefix,
            prefix=args.prefix,
            from_beginning=args.from_beginning,
        ):
            print(
                f"{change.observed_at_ms} {change.namespace} {change.change} "
                f"is_stable={str(change.is_stable).lower()} stable_as_of={change.stable_as_of}",
                flush=True,
            )

    try:
        asyncio.run(watch())
    except KeyboardInterrupt:
        pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="layer", description="Layer: freshness signals for turbopuffer."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("worker", help="run a Layer worker").set_defaults(run=run_worker)
    commands.add_parser(
        "dev", help="run the embedded broker, the emulator and a worker"
    ).set_defaults(run=run_dev)

    emulator = commands.add_parser("emulator", help="run the turbopuffer emulator", add_help=False)
    emulator.add_argument("emulator_args", nargs=argparse.REMAINDER)
    emulator.set_defaults(run=run_emulator)

    notify = commands.add_parser("notify", help="publish a write notification")
    notify.add_argument("namespace")
    notify.add_argument("--rows", type=int, default=None, help="rows written")
    notify.set_defaults(run=run_notify)

    watch = commands.add_parser("watch", help="print stability changes as they happen")
    watch.add_argument("--prefix", default=None, help="only namespaces starting with this")
    watch.add_argument(
        "--from-beginning", action="store_true", help="replay the changes already published"
    )
    watch.set_defaults(run=run_watch)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    args.run(args)
