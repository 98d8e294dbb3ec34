"""Publish vehicle records over MQTT the way a connected-car backend streams them.

Each record goes to ``{topic_prefix}/{vin}/{category}`` with QoS 1 (the call returns once the
MQTT server has acknowledged every record). Used by the simulator and the tests; from a shell::

    python examples/mqtt_publish.py --prefix vehicles < records.ndjson
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable
from typing import Any

import aiomqtt


def topic_for(record: dict[str, Any], topic_prefix: str) -> str:
    return f"{topic_prefix.rstrip('/')}/{record['vin']}/{record['category']}"


async def publish_records(
    records: Iterable[dict[str, Any]],
    *,
    host: str,
    port: int,
    topic_prefix: str,
    client_id: str | None = None,
) -> int:
    """Publish each record with QoS 1; the number published."""
    count = 0
    async with aiomqtt.Client(
        host, port, identifier=client_id, protocol=aiomqtt.ProtocolVersion.V5
    ) as client:
        for record in records:
            payload = json.dumps(record, separators=(",", ":"))
            await client.publish(topic_for(record, topic_prefix), payload, qos=1)
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description="publish NDJSON records from stdin over MQTT")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--prefix", default="vehicles")
    parser.add_argument("--client-id", default=None)
    args = parser.parse_args()
    records = (json.loads(line) for line in sys.stdin if line.strip())
    count = asyncio.run(
        publish_records(
            records,
            host=args.host,
            port=args.port,
            topic_prefix=args.prefix,
            client_id=args.client_id,
        )
    )
    print(f"published: {count}", file=sys.stderr)


if __name__ == "__main__":
    main()
