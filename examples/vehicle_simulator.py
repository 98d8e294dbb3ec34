"""A vehicle simulator: realistic drives for any number of vehicles, sent over HTTP or MQTT.

Each vehicle drives one of the routes in ``broker.simulator`` (positions every
30 s along the road, speed, mileage rising, battery voltage, doors, service
data). Over HTTP the records go to the broker's ingest API as NDJSON batches,
authenticated as the car maker's backend; over MQTT each record is published to
``{prefix}/{vin}/{category}`` with QoS 1.

    python examples/vehicle_simulator.py --http http://127.0.0.1:8080 \\
        --client broker-backend --secret demo-secret-broker-backend
    python examples/vehicle_simulator.py --mqtt mqtt://127.0.0.1:1883 --prefix vehicles
    python examples/vehicle_simulator.py --stdout --vehicles 3 > records.ndjson

Without ``--vin``, the vehicles are the demo seed's (those it can find) or
generated VINs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp

from broker.simulator import ROUTES, VehicleState, drive

HERE = Path(__file__).resolve().parent
VIN_ALPHABET = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


def demo_vins() -> list[str]:
    seed = HERE / "demo-seed.json"
    if not seed.is_file():
        return []
    return [v["vin"] for v in json.loads(seed.read_text(encoding="utf-8"))["vehicles"]]


def generated_vin(index: int) -> str:
    serial = ""
    n = index
    for _ in range(6):
        serial = VIN_ALPHABET[n % len(VIN_ALPHABET)] + serial
        n //= len(VIN_ALPHABET)
    return f"WMWSMX00000{serial}"  # 17 characters, never I, O or Q


def records(vins: list[str], *, start: datetime, seed: int) -> Iterator[dict[str, Any]]:
    routes = list(ROUTES)
    for index, vin in enumerate(vins):
        state = VehicleState(vin=vin, mileage_km=10_000 + 1_000 * index)
        yield from drive(state, start=start, route=routes[index % len(routes)], seed=seed + index)


async def send_http(
    items: Iterator[dict[str, Any]], *, url: str, client: str, secret: str, batch: int
) -> dict[str, int]:
    totals: dict[str, int] = {}
    base = url.rstrip("/")
    basic = base64.b64encode(f"{client}:{secret}".encode()).decode()
    async with aiohttp.ClientSession() as session:
        # The backend's own client-credentials token (scope ingest) authorises the batches.
        async with session.post(
            f"{base}/oauth/token",
            data={"grant_type": "client_credentials", "scope": "ingest"},
            headers={"Authorization": f"Basic {basic}"},
        ) as response:
            grant = await response.json()
            if response.status != 200:
                raise SystemExit(f"no ingest token: {grant.get('error_description', grant)}")
        session.headers["Authorization"] = f"Bearer {grant['access_token']}"
        chunk: list[dict[str, Any]] = []

        async def flush() -> None:
            body = "\n".join(json.dumps(r, separators=(",", ":")) for r in chunk).encode()
            async with session.post(
                base + "/v1/ingest/records",
                data=body,
                headers={"Content-Type": "application/x-ndjson"},
            ) as response:
                answer = await response.json()
                if response.status >= 400:
                    raise SystemExit(f"ingest refused the batch: {answer.get('detail', answer)}")
                for key, value in answer["summary"].items():
                    totals[key] = totals.get(key, 0) + value
            chunk.clear()

        for record in items:
            chunk.append(record)
            if len(chunk) >= batch:
                await flush()
        if chunk:
            await flush()
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--http", metavar="BROKER_URL", help="the broker's base URL")
    target.add_argument("--mqtt", metavar="MQTT_URL", help="e.g. mqtt://127.0.0.1:1883")
    target.add_argument("--stdout", action="store_true", help="write NDJSON to standard output")
    parser.add_argument("--client", default="broker-backend", help="backend client id (HTTP)")
    parser.add_argument("--secret", default="demo-secret-broker-backend", help="its secret")
    parser.add_argument("--prefix", default="vehicles", help="MQTT topic prefix")
    parser.add_argument("--vin", action="append", help="a vehicle to drive (repeatable)")
    parser.add_argument("--vehicles", type=int, default=0, help="drive this many vehicles")
    parser.add_argument("--hours-ago", type=float, default=1.0, help="when the drives start")
    parser.add_argument("--batch", type=int, default=500, help="records per HTTP request")
    parser.add_argument("--seed", type=int, default=0, help="random seed (deterministic)")
    args = parser.parse_args(argv)

    vins = args.vin or demo_vins()
    if args.vehicles:
        vins = (vins + [generated_vin(i) for i in range(args.vehicles)])[: args.vehicles]
    start = datetime.now(UTC) - timedelta(hours=args.hours_ago)
    items = records(vins, start=start, seed=args.seed)
    if args.stdout:
        for record in items:
            sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
        return 0
    if args.http:
        totals = asyncio.run(
            send_http(
                items, url=args.http, client=args.client, secret=args.secret, batch=args.batch
            )
        )
        print(json.dumps(totals))
        return 0
    sys.path.insert(0, str(HERE))
    from mqtt_publish import publish_records

    parsed = urlparse(args.mqtt)
    count = asyncio.run(
        publish_records(
            items, host=parsed.hostname or "127.0.0.1", port=parsed.port or 1883,
            topic_prefix=args.prefix,
        )
    )  # fmt: skip
    print(json.dumps({"published": count}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
