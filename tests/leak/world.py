"""The leak scan's world: a contract for every combination, canaries through ingest.

Every combination the contract schema (and the broker's rules beyond it) allows of
channel × protection level × vehicle identifier gets a recipient of its own, with
one client and one contract sharing vehicle status, position and general data
(whose ``model`` and ``colour`` are free text). Each recipient holds a grant on
three vehicles: anna's Cooper (its free text names anna, bram, carla and the VIN,
with exact coordinates), bram's Countryman (beside it, so an anonymised group
reaches *k*) and carla's Cooper C, whose owner switched location off.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric import ec
from ingest_app import App, start_app
from worlds import COOPER, COOPER_C, COUNTRYMAN, NOW, ROOT

from broker.clock import format_instant
from broker.ingest.service import RawItem
from broker.oauth import jose
from broker.services.seed import apply_seed, read_seed

CHANNELS = ("pull", "webhook", "dataspace", "export")
#: (protection level, vehicle identifier): what the contract schema and its rules allow.
FORMS = (
    ("identified", "vin"),
    ("identified", "pseudonym"),
    ("identified", "none"),
    ("pseudonymised", "pseudonym"),
    ("pseudonymised", "none"),
    ("anonymised", "none"),
)
VEHICLES = (COOPER, COUNTRYMAN, COOPER_C)
#: Every category of the scan's contracts: a token without them is answered no records.
SCOPE = "vehicle.status:read vehicle.position:read vehicle.general:read"
#: When every scan contract ends (the "contract ended" state moves the clock past it).
CONTRACT_END = NOW + timedelta(hours=2)
#: Data is recorded during the hour before NOW.
DATA_START = NOW - timedelta(hours=1)
MINUTES = 12

#: Exact coordinates of anna's Cooper (parked), and of carla's location-off Cooper C.
EXACT = (52.3711117, 4.8911117)
LOCATION_OFF = (48.1234567, 11.7654321)

#: Free text written by the car maker's backend into ``vehicle.general`` (≤ 100 characters).
MODEL_TEXT = f"Canarymodel, owner Anna de Vries anna.devries@example.nl +31201234567 {COOPER}"
COLOUR_TEXT = (
    f"Canaryblue, Prinsengracht 263, Carla Smit carla.smit@example.com {EXACT[0]},{EXACT[1]}"
)
assert len(MODEL_TEXT) <= 100 and len(COLOUR_TEXT) <= 100


@dataclass(frozen=True)
class Party:
    """One scan recipient: its contract's form, client and grants."""

    channel: str
    level: str
    identifier: str
    grants: dict[str, str]  # vin -> grant id

    @property
    def key(self) -> str:
        return f"{self.channel}-{self.level[:4]}-{self.identifier}"

    @property
    def recipient(self) -> str:
        return f"rcp-scan-{self.key}"

    @property
    def contract(self) -> str:
        return f"scan-{self.key}"

    @property
    def client_id(self) -> str:
        return f"scan-{self.key}"

    @property
    def secret(self) -> str:
        return f"secret-{self.key}"

    @property
    def precise(self) -> bool:
        return self.level == "identified"


@dataclass
class ScanWorld:
    app: App
    parties: list[Party]
    record_ids: list[str]
    key: Any = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    @property
    def client(self) -> TestClient:  # type: ignore[type-arg]
        return self.app.client

    @property
    def base(self) -> str:
        return self.app.broker.settings.public_url.rstrip("/")

    def proof(self, method: str, path: str, token: str | None = None) -> str:
        return jose.sign_dpop_proof(
            self.key,
            method=method,
            url=f"{self.base}{path}",
            now=self.app.clock.now(),
            access_token=token,
        )

    async def token(self, party: Party, *, dpop: bool) -> dict[str, Any]:
        """A client-credentials token of ``party``: DPoP-bound, or a plain bearer token."""
        import base64

        basic = base64.b64encode(f"{party.client_id}:{party.secret}".encode()).decode()
        headers = {"Authorization": f"Basic {basic}"}
        if dpop:
            headers["DPoP"] = self.proof("POST", "/oauth/token")
        response = await self.client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": SCOPE},
            headers=headers,
        )
        body: dict[str, Any] = await response.json()
        assert response.status == 200, (party.key, body)
        return body | {"_headers": dict(response.headers), "_raw": json.dumps(body)}


def _contract(
    channel: str, level: str, identifier: str, recipient: str, cid: str
) -> dict[str, Any]:
    protection: dict[str, Any] = {"level": level}
    location: dict[str, Any] = {"precisions": ["coarse"], "coarse_grid_m": 1000}
    if level == "identified":
        location["precisions"] = ["precise", "coarse"]
    if level == "anonymised":
        protection["anonymisation"] = {
            "grid_m": 1000,
            "time_bucket": "PT15M",
            "trip_trim_m": 0,
            "k": 2,
        }
    return {
        "id": cid,
        "version": 1,
        "title": {"en": f"Leak scan: {channel}, {level}, {identifier}", "nl": "Lekscan"},
        "recipient": recipient,
        "purpose": {"code": "leak-scan"},
        "legal_basis": "6(1)(f)",
        # A webhook contract is a fleet's: its grants are fleet clearances (fleet events).
        "activation": "fleet_clearance" if channel == "webhook" else "legitimate_interest",
        "categories": {
            "vehicle.status": {"fields": ["mileage_km", "battery_voltage_v"], "optional": False},
            "vehicle.position": {
                "fields": ["latitude", "longitude", "speed_kmh"],
                "optional": False,
            },
            "vehicle.general": {"fields": ["model", "colour", "build_year"], "optional": False},
        },
        "protection": protection,
        "channels": [channel],
        "sender_constraint": "dpop",
        "vehicle_identifier": identifier,
        "location": location,
        "retention_at_recipient": "P1Y",
        "rate_limit": {"requests": 100000, "per": "PT1M"},
        "validity": {"from": "2026-01-01T00:00:00Z", "until": format_instant(CONTRACT_END)},
        "processing_countries": ["NL"],
    }


def write_seed(directory: Path) -> tuple[Path, list[Party]]:
    """The scan's seed file (recipients, clients, contracts, grants) and its parties."""
    (directory / "contracts").mkdir(parents=True, exist_ok=True)
    parties: list[Party] = []
    seed: dict[str, Any] = {
        "format": "vehicle-data-broker/seed",
        "version": 1,
        "demo_only": True,
        "recipients": [],
        "clients": [],
        "contracts": [],
        "grants": [],
    }
    demo = json.loads((ROOT / "examples" / "demo-seed.json").read_text())
    seed["customers"], seed["vehicles"] = demo["customers"], demo["vehicles"]
    seed["fleets"] = []
    kinds = {
        "identified": "service_partner",
        "pseudonymised": "development_partner",
        "anonymised": "anonymised_data_consumer",
    }
    for channel in CHANNELS:
        for level, identifier in FORMS:
            party = Party(
                channel, level, identifier, {vin: f"gr-{secrets.token_hex(8)}" for vin in VEHICLES}
            )
            parties.append(party)
            doc = _contract(channel, level, identifier, party.recipient, party.contract)
            path = directory / "contracts" / f"{party.contract}.json"
            path.write_text(json.dumps(doc, indent=1))
            seed["contracts"].append(f"contracts/{path.name}")
            seed["recipients"].append(
                {
                    "id": party.recipient,
                    "name": f"Scan {party.key}",
                    "kind": "fleet_operator" if channel == "webhook" else kinds[level],
                    "legal_entity": f"Scan {party.key} B.V.",
                    "role": "independent_controller",
                    "headquarters_country": "NL",
                    "processing_countries": ["NL"],
                    "storage_countries": ["NL"],
                    "status": "active",
                }
            )
            seed["clients"].append(
                {
                    "client_id": party.client_id,
                    "name": f"Client of {party.recipient}",
                    "kind": "recipient",
                    "recipient": party.recipient,
                    "auth_method": "client_secret_basic",
                    "client_secret": party.secret,
                    "redirect_uris": [],
                    "grant_types": ["client_credentials"],
                    "scopes": [
                        "vehicle.status:read",
                        "vehicle.position:read",
                        "vehicle.general:read",
                    ],
                }
            )
            if channel == "webhook":
                seed["fleets"] += [
                    {"operator": party.recipient, "vin": vin, "since": "2026-01-01T00:00:00Z"}
                    for vin in VEHICLES
                ]
            for vin, grant_id in party.grants.items():
                seed["grants"].append(
                    {
                        "id": grant_id,
                        "contract": party.contract,
                        "contract_version": 1,
                        "vin": vin,
                        "categories": ["vehicle.status", "vehicle.position", "vehicle.general"],
                        "state": "active",
                        "valid_from": "2026-01-01T00:00:00Z",
                        "location_precision": "precise" if party.precise else "coarse",
                    }
                )
    path = directory / "seed.json"
    path.write_text(json.dumps(seed, indent=1))
    return path, parties


def records_at(start: datetime, tag: str, minutes: int = 2) -> list[dict[str, Any]]:
    """Canary telemetry from ``start`` on; the car maker's record ids embed the VIN, as real
    ones do, and times carry microseconds (an exact time is a join key)."""
    records: list[dict[str, Any]] = []
    for minute in range(minutes):
        at = format_instant(start + timedelta(minutes=minute, seconds=7, microseconds=123457))
        for vin, (lat, lon) in (
            (COOPER, EXACT),
            (COUNTRYMAN, (EXACT[0] + 0.0001, EXACT[1])),
            (COOPER_C, LOCATION_OFF),
        ):
            records.append(
                {
                    "record_id": f"{vin}-{tag}-pos-{minute}",
                    "vin": vin,
                    "category": "vehicle.position",
                    "recorded_at": at,
                    "data": {
                        "latitude": lat,
                        "longitude": lon,
                        "speed_kmh": 0.0,
                        "trip_id": f"{vin}-trip",
                    },
                }
            )
            records.append(
                {
                    "record_id": f"{vin}-{tag}-st-{minute}",
                    "vin": vin,
                    "category": "vehicle.status",
                    "recorded_at": at,
                    "data": {
                        "mileage_km": 1000.0 * (1 + VEHICLES.index(vin)) + minute,
                        "battery_voltage_v": 13.9,
                    },
                }
            )
    records.append(
        {
            "record_id": f"{COOPER}-{tag}-gen",
            "vin": COOPER,
            "category": "vehicle.general",
            "recorded_at": format_instant(start),
            "data": {"model": MODEL_TEXT, "colour": COLOUR_TEXT, "build_year": 2024},
        }
    )
    return records


async def make_scan_world(database_url: str, tmp_path: Path, aiohttp_client: Any) -> ScanWorld:
    from ingest_app import free_port

    app = await start_app(
        database_url,
        tmp_path,
        aiohttp_client,
        port=free_port(),
        webhook_allow_http_loopback=True,
        webhook_worker=False,
    )
    broker = app.broker
    path, parties = write_seed(tmp_path / "scan")
    seed = read_seed(broker.documents, path)
    broker.database.run_sync(
        lambda s: apply_seed(s, seed, broker.grants, vault=broker.vault, now=NOW), write=True
    )
    records = records_at(DATA_START, "base", MINUTES)
    items = [RawItem(record, index) for index, record in enumerate(records)]
    result = broker.ingest.ingest_sync(items, source="leak-scan")
    rejected = [r for r in result.results if r.status == "rejected"]
    assert not rejected, rejected
    return ScanWorld(app, parties, [str(r["record_id"]) for r in records])
