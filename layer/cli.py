"""`layer`: the command line (worker, dev, emulator, notify, watch).

Settings are validated before anything starts, so a bad one is a one-line message naming
the environment variable, not a traceback. So are Layer's topics (`layer.kafka_topics`): a
worker creates and verifies them before Faust's worker exists, and every command here forbids
its Kafka clients to let a broker auto-create a topic.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from layer.errors import LayerError
from layer.settings import Settings, SettingsError, load_settings

__all__ = ["main"]


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        sys.exit(f"layer: {exc}")


@contextlib.contextmanager
def _quiet_kafka_logs() -> Iterator[None]:
    """Keep aiokafka's own complaints (one per failed connection attempt) off stderr while no
    logging is configured yet: the one line this command prints on failure says it all."""
    handler = logging.NullHandler()
    kafka_log = logging.getLogger("aiokafka")
    kafka_log.addHandler(handler)
    try:
        yield
    finally:
        kafka_log.removeHandler(handler)


def _ensure_topics_or_exit(settings: Settings, app: Any) -> None:
    """Create and verify every topic the worker uses, or exit with one line (no traceback).

    Runs on its own event loop, before Faust's worker (and so its producer, consumer and web
    server) exists: nothing in this process can produce to a topic before it is verified.
    A hook inside Faust's startup would gain nothing: it would run after Faust set up its
    logging and signal handlers, and a failure raised there is reported as a crash of the
    worker, with a traceback, not as one line.
    """
    from aiokafka.errors import KafkaError

    from layer.app import topics
    from layer.clients import bootstrap_servers
    from layer.kafka_topics import ensure_topics, layer_topic_specs

    specs = layer_topic_specs(app, topics)
    loop = asyncio.new_event_loop()
    try:
        with _quiet_kafka_logs():
            loop.run_until_complete(
                ensure_topics(
                    bootstrap_servers(settings.kafka_broker),
                    specs,
                    timeout_s=settings.kafka_start_timeout_ms / 1000,
                )
            )
    except LayerError as exc:
        sys.exit(f"layer: {exc}")
    except KafkaError as exc:
        sys.exit(f"layer: Kafka refused to create or describe Layer's topics: {exc}")
    finally:
        loop.close()


def run_worker(_args: argparse.Namespace) -> None:
    """Run one Faust worker (agents, tables, web server on LAYER_PORT), once its topics are
    verified."""
    settings = _settings_or_exit()
    if settings.turbopuffer_api_key is None:
        sys.exit("layer: invalid setting TURBOPUFFER_API_KEY: the watcher needs an upstream key")
    from layer.kafka_topics import forbid_auto_creation_in_process

    # Before any Kafka client of this process exists (Faust's, the notification buffer's, …).
    forbid_auto_creation_in_process()
    if settings.event_loop == "uvloop":
        import mode.loop

        mode.loop.use("uvloop")  # before any event loop exists (Faust's, the topic check's)
    from layer.app import settings as app_settings  # the settings the Faust app was built from
    from layer.services import build_services
    from layer.worker import LayerWorker, app, wire

    _ensure_topics_or_exit(settings, app)
    wire(app, build_services(app_settings))

    LayerWorker(
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
    """Publish one write notification (after a write made straight to turbopuffer).

    The topic must exist (a worker creates it): a missing one is a one-line error, and is not
    created.
    """
    from aiokafka.errors import KafkaError

    from layer.clients import WriteNotifier
    from layer.kafka_topics import forbid_auto_creation_in_process

    settings = _settings_or_exit()
    forbid_auto_creation_in_process()

    async def notify() -> None:
        async with WriteNotifier(
            settings.kafka_broker, topic_prefix=settings.topic_prefix, source="layer-cli"
        ) as notifier:
            note = await notifier.notify(args.namespace, rows=args.rows)
        print(note.model_dump_json(exclude_none=True))

    try:
        with _quiet_kafka_logs():
            asyncio.run(notify())
    except LayerError as exc:
        sys.exit(f"layer: {exc}")
    except KafkaError as exc:
        sys.exit(f"layer: cannot publish to Kafka at {settings.kafka_broker}: {exc}")


def run_watch(args: argparse.Namespace) -> None:
    """Print one line per stability change until interrupted."""
    from aiokafka.errors import KafkaError

    from layer.clients import stability_changes
    from layer.kafka_topics import forbid_auto_creation_in_process

    settings = _settings_or_exit()
    forbid_auto_creation_in_process()

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
    except LayerError as exc:
        sys.exit(f"layer: {exc}")
    except KafkaError as exc:
        sys.exit(f"layer: cannot read from Kafka at {settings.kafka_broker}: {exc}")


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
