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
from broker.errors import ConfigurationError
from broker.ingest.service import RawItem
from broker.services.seed import apply_seed, read_seed
from broker.settings import DEFAULT_DATABASE_URL, Settings
from broker.simulator import ROUTES, VehicleState, drive

DEMO_DATABASE_URL = "sqlite:///var/demo.sqlite3"


def demo_seed_path() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "_examples", here.parent / "examples"):
        path = candidate / "demo-seed.json"
        if path.is_file():
            return path
    raise ConfigurationError("the demo seed (examples/demo-seed.json) is missing")


def prepare(broker: Broker, seed_path: Path) -> dict[str, Any]:
    """Load the seed and drive every owned vehicle once through the simulator.

    The drives go through the ingest service, the same path as the HTTP and
    MQTT ingest: validated, positions encrypted at rest, the location
    safeguard applied.
    """
    seed = read_seed(broker.documents, seed_path)
    now = broker.clock.now()
    report = broker.database.run_sync(
        lambda s: apply_seed(s, seed, broker.grants, vault=broker.vault, now=now), write=True
    )
    routes = list(ROUTES)
    items: list[RawItem] = []
    for index, vehicle in enumerate(seed.document.get("vehicles", [])):
        if not any(o.get("until") is None for o in vehicle.get("owners", [])):
            continue
        state = VehicleState(vin=vehicle["vin"], model=vehicle.get("model") or "MINI Cooper SE")
        start = now - timedelta(hours=2)
        for record in drive(state, start=start, route=routes[index % len(routes)], seed=index):
            items.append(RawItem(record, len(items)))
    result = broker.ingest.ingest_sync(items, source="demo")
    summary = result.summary()
    return {
        "seed": report.as_dict(),
        "telemetry": {
            "stored": summary["stored"] + summary["duplicates"],
            "positions_not_collected": summary["withheld"],
            "rejected": summary["rejected"],
        },
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
        f"  {base}/login                                    (log in as a demo customer)",
        f"  curl {base}/.well-known/oauth-authorization-server",
        f"  curl -u insurer-demo:demo-secret-insurer-demo -d grant_type=client_credentials "
        f"{base}/oauth/token",
        f"  curl {base}/healthz",
        f"  curl {base}/readyz",
        f"  .venv/bin/python examples/vehicle_simulator.py --http {base}   # more drives",
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
