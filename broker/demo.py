"""``broker demo``: a broker with demo data on an embedded SQLite file, ready to explore.

Loads the demo seed (fixed, demo-only credentials), drives every owned vehicle
once through the simulator, stores the telemetry, prints what it did and how
to explore it, then serves until interrupted.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from broker.bootstrap import Broker, open_broker
from broker.clock import parse_instant
from broker.errors import ConfigurationError
from broker.services.seed import apply_seed, read_seed
from broker.settings import DEFAULT_DATABASE_URL, Settings
from broker.simulator import ROUTES, VehicleState, drive
from broker.store.telemetry_write import NewRecord, store_records

DEMO_DATABASE_URL = "sqlite:///var/demo.sqlite3"


def demo_seed_path() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "_examples", here.parent / "examples"):
        path = candidate / "demo-seed.json"
        if path.is_file():
            return path
    raise ConfigurationError("the demo seed (examples/demo-seed.json) is missing")


def prepare(broker: Broker, seed_path: Path) -> dict[str, Any]:
    """Load the seed and simulate one drive per owned vehicle; returns what was done."""
    seed = read_seed(broker.documents, seed_path)
    now = broker.clock.now()
    report = broker.database.run_sync(
        lambda s: apply_seed(s, seed, broker.grants, vault=broker.vault, now=now), write=True
    )
    stored, withheld, rejected = 0, 0, 0
    routes = list(ROUTES)
    records: list[NewRecord] = []
    for index, vehicle in enumerate(seed.document.get("vehicles", [])):
        if not any(o.get("until") is None for o in vehicle.get("owners", [])):
            continue
        collects_location = vehicle.get("location", {}).get("collection", True)
        state = VehicleState(vin=vehicle["vin"], model=vehicle.get("model") or "MINI Cooper SE")
        start = now - timedelta(hours=2)
        for record in drive(state, start=start, route=routes[index % len(routes)], seed=index):
            if record["category"] == "vehicle.position" and not collects_location:
                withheld += 1  # the location safeguard: counted, never kept
                continue
            if broker.documents.catalogue.validate_record_data(record["category"], record["data"]):
                rejected += 1
                continue
            records.append(
                NewRecord(
                    id=record["record_id"],
                    vin=record["vin"],
                    category=record["category"],
                    recorded_at=parse_instant(record["recorded_at"]),
                    data=record["data"],
                )
            )
    stored = broker.database.run_sync(
        lambda s: store_records(s, records, received_at=now), write=True
    )
    return {
        "seed": report.as_dict(),
        "telemetry": {"stored": stored, "positions_not_collected": withheld, "rejected": rejected},
    }


def _explain(settings: Settings, seed_path: Path, done: dict[str, Any]) -> str:
    seed = json.loads(seed_path.read_text(encoding="utf-8"))
    base = settings.issuer
    lines = [
        "Vehicle-data broker demo (DEMO DATA AND CREDENTIALS ONLY: never use them for real)",
        f"  database:  {settings.database_url}",
        f"  seed:      {seed_path}",
        f"  loaded:    {json.dumps(done['seed']['created'])}",
        f"  telemetry: {json.dumps(done['telemetry'])}",
        "",
        "Demo customers (login / password):",
    ]
    lines += [
        f"  {c['login']:<12} {c.get('password', '(hashed)')}  [{c.get('language', 'en')}]"
        for c in seed.get("customers", [])
    ]
    lines += ["", "Demo OAuth clients (client_id / secret):"]
    lines += [
        f"  {c['client_id']:<24} {c.get('client_secret', '(public client)')}"
        for c in seed.get("clients", [])
    ]
    lines += [
        "",
        "Explore:",
        f"  curl {base}/healthz",
        f"  curl {base}/readyz",
        f"  BROKER_DATABASE_URL={settings.database_url} .venv/bin/broker grants list",
        f"  BROKER_DATABASE_URL={settings.database_url} .venv/bin/broker contracts validate "
        "contracts/samples/*.json",
    ]
    return "\n".join(lines)


def run_demo(settings: Settings, *, serve_after: bool) -> int:
    if settings.database_url == DEFAULT_DATABASE_URL:
        settings = replace(settings, database_url=DEMO_DATABASE_URL)
    seed_path = demo_seed_path()
    broker = open_broker(settings)
    try:
        done = prepare(broker, seed_path)
    finally:
        broker.close()
    print(_explain(settings, seed_path, done), flush=True)
    if serve_after:
        from broker.serve import serve

        print(f"\nServing on {settings.issuer} (Ctrl-C to stop)", flush=True)
        serve(settings)
    return 0
