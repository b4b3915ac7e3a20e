"""Context for benchmark 2: produce → consume latency of a *plain* aiokafka consumer against
the embedded broker (Tansu), by the consumer's `fetch_max_wait_ms`.

Faust 0.15.3 hard-codes `fetch_max_wait_ms=1500` for its consumer
(faust/transport/drivers/aiokafka.py). A broker that answers a long-poll fetch as soon as
data arrives makes that harmless; one that holds the fetch until the wait expires makes it
the floor of every notification's latency. This measures which one Tansu is.

    .venv/bin/python bench/broker_latency.py --samples 40
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from harness import EmbeddedBroker, create_topics, percentiles, print_header, run_dir


async def measure(
    bootstrap: str, topic: str, wait_ms: int, samples: int, partitions: int
) -> dict[str, float]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="latest", fetch_max_wait_ms=wait_ms)  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await consumer.start()
    await producer.start()
    await consumer.seek_to_end()
    await asyncio.sleep(0.5)
    lags = []
    try:
        for i in range(samples):
            await asyncio.sleep(random.uniform(0.05, 0.3))
            key = f"k{i}".encode()
            t0 = time.monotonic()
            await producer.send_and_wait(topic, key=key, value=b"x", partition=i % partitions)
            while True:
                batch = await consumer.getmany(timeout_ms=5000)
                got = any(r.key == key for rs in batch.values() for r in rs)
                if got:
                    lags.append((time.monotonic() - t0) * 1000)
                    break
    finally:
        await consumer.stop()
        await producer.stop()
    return percentiles(lags)


async def run(bootstrap: str, samples: int, partitions: int) -> dict[str, object]:
    out: dict[str, object] = {}
    for wait_ms in (1500, 500, 100, 10):
        topic = f"latency-{wait_ms}-{random.randrange(1 << 30)}"
        await create_topics(bootstrap, [topic], partitions)
        out[f"fetch_max_wait_ms={wait_ms}"] = await measure(
            bootstrap, topic, wait_ms, samples, partitions
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args()
    out = run_dir("broker-latency")
    print_header("produce → consume latency, plain aiokafka consumer, embedded broker", vars(args))
    with EmbeddedBroker(log_path=out / "broker.log") as broker:
        print(
            "figures (ms): "
            + json.dumps(asyncio.run(run(broker.bootstrap, args.samples, args.partitions)))
        )


if __name__ == "__main__":
    main()
