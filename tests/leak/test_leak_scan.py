"""The leak scan: every way out, in every state a leak was found in, checked against the log.

For every contract form the schema allows (channel × protection level × vehicle
identifier: :mod:`leak.world`) and in each state of :data:`STATES`, every
recipient-facing route of the application's own route table is called with real
path and query values (learned from earlier answers, the way a client learns them),
every ``next_cursor`` and ``Link`` is followed, and every webhook event type is
triggered and delivered to a real receiver. Everything that comes back — bodies,
headers, error bodies, and every base64, base64url or JWT segment in them, decoded —
is scanned for canaries (:mod:`leak.scanner`). It asserts:

- no canary reaches a recipient whose contract does not release it in that form:
  the holders' and another customer's name, e-mail, phone and street written into
  free text; a VIN, a car-maker record id, a customer id or the audit log's vehicle
  reference where the contract pseudonymises; another recipient's pseudonyms or
  grant ids; exact coordinates under a coarse grant; any position of the vehicle
  whose owner switched location off;
- every answer and webhook message that names a vehicle, grant or customer carries
  ``release`` (or ``audit_seq``) pointing at exactly one audit entry of that
  recipient with the same payload digest; no other answer names any;
- every recipient-facing route was answered 2xx at least once, every event type
  was delivered, and every canary that some contract does release appeared there
  (so the scan cannot pass by finding nothing);
- ``broker audit verify`` is green afterwards.

A route added to the application is walked without editing this test.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
import standardwebhooks
from aiohttp import web
from leak.scanner import Canaries, message_texts, surfaces
from leak.world import (
    CONTRACT_END,
    DATA_START,
    EXACT,
    LOCATION_OFF,
    Party,
    ScanWorld,
    make_scan_world,
    records_at,
)
from worlds import CLUBMAN, COOPER, COOPER_C, COUNTRYMAN, NOW

from broker import commands
from broker.audit.entry import AuditEntry
from broker.clock import format_instant
from broker.domain.grants import GrantAction
from broker.gate.release import document_digest
from broker.http.openapi import API_DESCRIPTION, Operation
from broker.ingest.service import RawItem
from broker.store import audit as audit_store
from broker.store import contracts as contract_store
from broker.store.tables import RecipientRow
from broker.webhooks.egress import Egress
from broker.webhooks.events import event_types
from broker.webhooks.runner import egress_policy, make_worker

STATES = ("normal", "bearer", "suspended", "country_refused", "withdrawn", "sold",
          "contract_ended")  # fmt: skip
CATEGORIES = ("vehicle.general", "vehicle.position", "vehicle.status")
#: Routes that answer the OAuth protocol (the written exception): scanned, never audited.
PROTOCOL = {("POST", "/oauth/token"), ("POST", "/oauth/introspect")}
#: Request bodies the scan sends, by operation; any other write gets ``{}``.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/recipient/eligibility"): lambda party: {
        "vin": COOPER,
        "contract": party.contract,
    },
    ("POST", "/v1/recipient/webhooks"): lambda party: {
        "url": "http://127.0.0.1:9/never",
        "event_types": ["ping"],
        "description": "scan",
    },
    ("PATCH", "/v1/recipient/webhooks/{id}"): lambda party: {"description": "scanned"},
}
MAX_PAGES = 20


@dataclass
class Answer:
    party: Party
    state: str
    method: str
    route: str  # the route's canonical path
    url: str
    status: int
    headers: dict[str, str]
    body: bytes
    texts: list[str] = field(default_factory=list)

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass
class Scan:
    world: ScanWorld
    answers: list[Answer] = field(default_factory=list)
    #: Every reference a party was handed (its pseudonyms, grant ids, record ids).
    handles: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    async def call(
        self,
        party: Party,
        state: str,
        op: Operation,
        url: str,
        token: dict[str, Any] | None,
        *,
        bearer: bool,
        body: Any = None,
    ) -> Answer:
        headers: dict[str, str] = {}
        if token is not None:
            access = token["access_token"]
            if bearer:
                headers["Authorization"] = f"Bearer {access}"
            else:
                headers["Authorization"] = f"DPoP {access}"
                headers["DPoP"] = self.world.proof(op.method, url.split("?")[0], access)
        kwargs: dict[str, Any] = {"headers": headers}
        if body is not None:
            kwargs["json"] = body
        elif op.method in ("POST", "PATCH", "PUT"):
            kwargs["json"] = {}
        response = await self.world.client.request(op.method, url, **kwargs)
        raw = await response.read()
        answer = Answer(
            party, state, op.method, op.path, url, response.status, dict(response.headers), raw
        )
        answer.texts = surfaces(message_texts(raw, answer.headers))
        self.answers.append(answer)
        return answer


def recipient_operations(app: web.Application) -> list[Operation]:
    """Every recipient-facing operation of the route table, collections before items."""
    described = app[API_DESCRIPTION].operations
    routes = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource}
    facing = sorted(
        (method, path)
        for method, path in routes
        if path.startswith("/v1/recipient")
        or any(
            name == "recipient"
            for name, _ in getattr(described.get((method, path)), "security", ())
        )
    )
    missing = [key for key in facing if key not in described]
    assert not missing, f"recipient routes without a description (parameters unknown): {missing}"
    order = {"GET": 0, "POST": 1, "PATCH": 2, "PUT": 2, "DELETE": 3}
    ops = [described[key] for key in facing]
    return sorted(ops, key=lambda o: (o.path.count("{"), order.get(o.method, 9), o.path))


def _harvest(value: Any, into: dict[str, set[str]]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str) and len(item) < 200:
                into[key].add(item)
            _harvest(item, into)
    elif isinstance(value, list):
        for item in value:
            _harvest(item, into)


def _query(op: Operation) -> dict[str, str]:
    values = {
        "since": format_instant(DATA_START - timedelta(hours=1)),
        "until": format_instant(NOW + timedelta(hours=3)),
        "limit": "7",
        "status": "all",
    }
    return {
        p["name"]: values[p["name"]]
        for p in op.parameters
        if p.get("in") == "query" and p["name"] in values
    }


def _expand(
    path: str,
    known: dict[str, dict[str, set[str]]],
    created: dict[str, set[str]] | None,
) -> list[str]:
    """Real paths for ``path``: each parameter from the answers of the route above it; for a
    write to something the walk can create (``created`` given), only what it created."""
    names = re.findall(r"\{(\w+)\}", path)
    if not names:
        return [path]
    paths = [path]
    for name in names:
        parent = path.split("{" + name + "}")[0].rstrip("/")
        if created is not None:
            values = created.get(parent, set())
        else:
            seen = known.get(parent, {})
            values = seen.get(name) or seen.get("id") or known["*"].get(name) or {"unknown"}
        values = set(sorted(values)[:4])
        paths = [p.replace("{" + name + "}", value) for p in paths for value in sorted(values)]
    return paths


async def walk(
    scan: Scan, party: Party, state: str, token: dict[str, Any] | None, *, bearer: bool
) -> None:
    """Call every recipient-facing operation as ``party``, following every page."""
    app = scan.world.client.server.app
    known: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    known["*"]["contract"].add(party.contract)  # a recipient knows its own contracts
    created: dict[str, set[str]] = defaultdict(set)
    ops = recipient_operations(app)
    creatable = {o.path for o in ops if o.method == "POST" and "{" not in o.path}
    for op in ops:
        writes = op.method in ("DELETE", "PATCH") or (op.method == "POST" and "{" in op.path)
        own = writes and any(op.path.startswith(c + "/") for c in creatable)
        for path in _expand(op.path, known, created if own else None):
            body = BODIES.get((op.method, op.path))
            query = _query(op)
            url = f"{path}?{urlencode(query)}" if query else path
            for _page in range(MAX_PAGES):
                answer = await scan.call(
                    party, state, op, url, token, bearer=bearer, body=body(party) if body else None
                )
                document = answer.json()
                parent = op.path if "{" not in op.path else path
                _harvest(document, known[parent])
                _harvest(document, known["*"])
                if op.method == "POST" and "{" not in op.path and answer.status == 201:
                    created[op.path].add(str(document["id"]))
                link = answer.headers.get("Link", "")
                cursor = document.get("next_cursor") if isinstance(document, dict) else None
                if 'rel="next"' in link:
                    url = link.split(">")[0].lstrip("<")
                elif cursor:
                    url = f"{path}?{urlencode(query | {'cursor': cursor})}"
                else:
                    break
    for value in known["*"].get("vehicle", set()) | known["*"].get("grant", set()):
        scan.handles[party.key].add(value)
    for value in known["*"].get("id", set()):
        if value.startswith("rec_"):
            scan.handles[party.key].add(value)


async def introspect(scan: Scan, party: Party, state: str, token: str) -> None:
    """RFC 7662 introspection of ``token`` by its own client: a protocol answer, scanned."""
    import base64

    basic = base64.b64encode(f"{party.client_id}:{party.secret}".encode()).decode()
    response = await scan.world.client.post(
        "/oauth/introspect", data={"token": token}, headers={"Authorization": f"Basic {basic}"}
    )
    raw = await response.read()
    assert response.status == 200, raw
    headers = dict(response.headers)
    texts = surfaces(message_texts(raw, headers))
    scan.answers.append(
        Answer(party, state, "POST", "/oauth/introspect", "/oauth/introspect", 200, headers,
               raw, texts)
    )  # fmt: skip


# -- the world's states and what triggers events ---------------------------------------------


def set_recipients(world: ScanWorld, **values: Any) -> None:
    ids = [p.recipient for p in world.parties]
    update = sa.update(RecipientRow).where(sa.column("id").in_(ids)).values(**values)
    world.app.broker.database.run_sync(lambda s: s.execute(update), write=True)


def ingest(world: ScanWorld, tag: str) -> None:
    records = records_at(world.app.clock.now() - timedelta(minutes=5), tag)
    world.record_ids.extend(str(r["record_id"]) for r in records)
    items = [RawItem(r, i) for i, r in enumerate(records)]
    result = world.app.broker.ingest.ingest_sync(items, source="leak-scan")
    assert not [r for r in result.results if r.status == "rejected"]


def end_grants(world: ScanWorld, vin: str) -> None:
    broker = world.app.broker
    now = broker.clock.now()
    for party in world.parties:
        grant_id = party.grants[vin]
        broker.database.run_sync(
            lambda s, g=grant_id: broker.grants.transition(
                s, g, GrantAction.TERMINATE, at=now, reason="withdrawn"
            ),
            write=True,
        )


async def holder_change(world: ScanWorld, kind: str, **fields: str) -> None:
    """The car maker's backend reports a holder change (``POST /v1/holders/changes``)."""
    import secrets

    token = await world.app.token("broker-backend", "demo-secret-broker-backend", "holders")
    body = {"change_id": f"scan-{secrets.token_hex(6)}", "kind": kind,
            "at": format_instant(world.app.clock.now()), **fields}  # fmt: skip
    response = await world.client.post(
        "/v1/holders/changes", json=body, headers={"Authorization": token}
    )
    assert response.status == 201, await response.text()


async def join_clubman(world: ScanWorld) -> None:
    """Every webhook party's fleet takes in the Clubman (reported by the car maker's backend)
    and clears it: two events each."""
    broker = world.app.broker
    now = broker.clock.now()
    for party in world.parties:
        if party.channel != "webhook":
            continue
        contract = broker.database.run_sync(lambda s, p=party: contract_store.latest(s, p.contract))
        assert contract is not None
        await holder_change(world, "fleet_joined", vin=CLUBMAN, operator=party.recipient)
        grant = broker.database.run_sync(
            lambda s, c=contract: broker.grants.create(s, contract=c, vin=CLUBMAN, at=now),
            write=True,
        )
        party.grants[CLUBMAN] = grant.id


async def clubman_leaves(world: ScanWorld) -> None:
    for party in world.parties:
        if party.channel == "webhook":
            await holder_change(world, "fleet_left", vin=CLUBMAN, operator=party.recipient)


async def sell_and_lend(world: ScanWorld) -> None:
    """anna sells her Cooper to carla; carla drives bram's Countryman for a while."""
    await holder_change(world, "sale", vin=COOPER, customer="cus-carla")
    await holder_change(world, "driver_started", vin=COUNTRYMAN, customer="cus-carla")
    world.app.clock.advance(timedelta(minutes=1))
    await holder_change(world, "driver_ended", vin=COUNTRYMAN, customer="cus-carla")


# -- what may be found where ------------------------------------------------------------------


def canaries(world: ScanWorld) -> Canaries:
    keyring = world.app.broker.keyring
    found = Canaries()
    for vin in (COOPER, COUNTRYMAN, COOPER_C, CLUBMAN):
        found.add(f"vin:{vin}", vin)
        found.add(f"audit-ref:{vin}", keyring.vehicle_ref(vin))
    found.add("holder-name", "Anna de Vries")
    found.add("holder-email", "anna.devries@example.nl")
    found.add("holder-phone", "+31201234567", "31201234567", "020 123 4567")
    found.add("holder-street", "Prinsengracht 263")
    found.add("other-name", "Carla Smit")
    found.add("other-email", "carla.smit@example.com")
    found.add("customer-id", "cus-anna", "cus-bram", "cus-carla")
    found.add("record-id", *world.record_ids)
    found.add("exact-position", f"{EXACT[0]}", f"{EXACT[1]}")
    found.add("location-off", f"{LOCATION_OFF[0]}", f"{LOCATION_OFF[1]}", "48.12345", "11.76543")
    found.add("free-text", "canarymodel", "canaryblue")
    found.add("exact-time", ":07.123457")  # every record's time has these microseconds
    return found


def allowed(name: str, party: Party) -> bool:
    """Whether ``party``'s contract releases canary ``name`` in the form scanned for."""
    if name.startswith("vin:"):
        return party.level == "identified" and party.identifier == "vin"
    if name in ("exact-position", "exact-time"):  # exact under a precise (identified) grant
        return party.level == "identified"
    if name == "record-id":  # no recipient gets the car maker's ids where pseudonymised
        return party.level == "identified"
    return name == "free-text"


#: Canaries some contract releases: each must have been seen where it is allowed.
EXPECTED = ("vin:" + COOPER, "exact-position", "exact-time", "free-text")


def names_anything(answer_texts: Iterable[str], references: set[str]) -> set[str]:
    joined = "\n".join(answer_texts)
    return {ref for ref in references if ref in joined}


async def test_leak_scan(
    database_url: str,
    tmp_path: Path,
    aiohttp_client: Any,
    aiohttp_server: Any,
    record_property: Any,
) -> None:
    world = await make_scan_world(database_url, tmp_path, aiohttp_client)
    broker = world.app.broker
    scan = Scan(world)
    received: list[tuple[str, bytes, dict[str, str]]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((request.match_info["party"], await request.read(), dict(request.headers)))
        return web.Response(status=204)

    receiver_app = web.Application()
    receiver_app.router.add_post("/hook/{party}", hook)
    receiver = await aiohttp_server(receiver_app, host="127.0.0.1")
    egress = Egress(egress_policy(broker.settings))
    await egress.start()
    worker = make_worker(broker, egress)
    secrets: dict[str, str] = {}
    types = event_types(CATEGORIES)
    try:
        tokens = {p.key: await world.token(p, dpop=True) for p in world.parties}
        for party in world.parties:  # every webhook party subscribes to every event type
            token = tokens[party.key]["access_token"]
            path = "/v1/recipient/webhooks"
            response = await world.client.post(
                path,
                json={"url": str(receiver.make_url(f"/hook/{party.key}")), "event_types": types},
                headers={
                    "Authorization": f"DPoP {token}",
                    "DPoP": world.proof("POST", path, token),
                },
            )
            body = await response.json()
            if party.channel == "webhook":
                assert response.status == 201, body
                secrets[party.key] = body["secret"]
        for state in STATES:
            bearer = state == "bearer"
            if state == "contract_ended":
                world.app.clock.set(CONTRACT_END - timedelta(minutes=1))
            tokens = {p.key: await world.token(p, dpop=not bearer) for p in world.parties}
            for party in world.parties:  # the protocol answers are scanned too
                token = tokens[party.key]
                scan.answers.append(
                    Answer(
                        party,
                        state,
                        "POST",
                        "/oauth/token",
                        "/oauth/token",
                        200,
                        token["_headers"],
                        token["_raw"].encode(),
                        surfaces([token["_raw"], *token["_headers"].values()]),
                    )
                )
                await introspect(scan, party, state, token["access_token"])
            if state == "suspended":
                set_recipients(world, status="suspended")
                end_grants(world, COUNTRYMAN)  # the written exception: grant.ended still goes
            elif state == "country_refused":
                set_recipients(world, processing_countries=["NL", "US"], storage_countries=["US"])
            elif state == "withdrawn":
                end_grants(world, COOPER)
                await clubman_leaves(world)
            elif state == "sold":
                await sell_and_lend(world)
            elif state == "contract_ended":
                world.app.clock.set(CONTRACT_END + timedelta(minutes=1))
                broker.database.run_sync(
                    lambda s: broker.grants.expire_due(s, now=broker.clock.now()), write=True
                )
            if state not in ("withdrawn", "contract_ended"):
                ingest(world, state)
            for party in world.parties:
                await walk(scan, party, state, tokens[party.key], bearer=bearer)
            if state == "normal":
                await join_clubman(world)
            await worker.drain()
            if state in ("suspended", "country_refused"):
                set_recipients(
                    world, status="active", processing_countries=["NL"], storage_countries=["NL"]
                )
        await worker.drain()
    finally:
        await egress.close()

    log = {
        e.seq: e
        for e in broker.database.run_sync(lambda s: audit_store.read(s, start=0, limit=10**6))
    }
    for contract, (linked, total) in value_linkage(scan).items():  # measured, not asserted
        record_property(f"value_linkage[{contract}]", f"{linked}/{total}")
        print(f"value linkage under {contract}: {linked}/{total} records match one identified")
    assert all(total for _linked, total in value_linkage(scan).values())  # data was pulled
    check_answers(scan, world, log)
    check_webhooks(received, secrets, world, log, types)
    assert commands.audit(broker, "checkpoint")[0]
    ok, lines = commands.audit(broker, "verify")
    assert ok, lines


def _records(answers: Iterable[Answer]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for answer in answers:
        document = answer.json()
        if 200 <= answer.status < 300 and isinstance(document, dict):
            out += [r for r in document.get("records", []) if isinstance(r, dict)]
    return out


def value_linkage(scan: Scan) -> dict[str, tuple[int, int]]:
    """Per pseudonymised pull contract: how many of its pulled records match exactly one record
    pulled under an identified contract by category and data values (a linkage attack on
    values alone; times, ids and handles are already not shared)."""

    def key(record: dict[str, Any]) -> str:
        return json.dumps([record.get("category"), record.get("data")], sort_keys=True)

    identified = Counter(
        key(r) for r in _records(a for a in scan.answers if a.party.key == "pull-iden-vin")
    )
    result: dict[str, tuple[int, int]] = {}
    for party in {a.party.key: a.party for a in scan.answers}.values():
        if party.channel != "pull" or party.level != "pseudonymised":
            continue
        records = _records(a for a in scan.answers if a.party.key == party.key)
        linked = sum(1 for r in records if identified.get(key(r)) == 1)
        result[party.contract] = (linked, len(records))
    return result


def _references(world: ScanWorld, scan: Scan) -> set[str]:
    refs = {g for p in world.parties for g in p.grants.values()}
    refs |= {h for handles in scan.handles.values() for h in handles}
    refs |= {COOPER, COUNTRYMAN, COOPER_C, CLUBMAN, "cus-anna", "cus-bram", "cus-carla"}
    return refs


def check_answers(scan: Scan, world: ScanWorld, log: dict[int, AuditEntry]) -> None:
    found_canaries = canaries(world)
    refs = _references(world, scan)
    grant_ids = {g for p in world.parties for g in p.grants.values()}
    leaks: list[str] = []
    seen_allowed: set[str] = set()  # seen where allowed, in answers that carry records
    claimed: Counter[int] = Counter()
    for answer in scan.answers:
        where = f"{answer.state} {answer.party.key} {answer.method} {answer.url} {answer.status}"
        for name in found_canaries.found(answer.texts):
            if allowed(name, answer.party):
                document = answer.json()
                if isinstance(document, dict) and document.get("records"):
                    seen_allowed.add(name)
            else:
                leaks.append(f"{name} in {where}")
        others = {h for key, hs in scan.handles.items() if key != answer.party.key for h in hs}
        foreign = names_anything(answer.texts, others - scan.handles[answer.party.key])
        if foreign:
            leaks.append(f"another recipient's references {sorted(foreign)[:3]} in {where}")
        document = answer.json()
        _positions_of_location_off(document, where, leaks)
        named = names_anything(answer.texts, refs)
        if (answer.method, answer.route) in PROTOCOL:
            # Client credentials: the customer has just given nothing, so nothing is named.
            if named:
                leaks.append(f"protocol answer names {sorted(named)[:3]}: {where}")
            continue
        if not named:
            continue
        release = document.get("release") if isinstance(document, dict) else None
        if not (200 <= answer.status < 300) or not isinstance(release, dict):
            leaks.append(f"names {sorted(named)[:3]} unaudited: {where}")
            continue
        entry = log.get(int(release["audit_seq"]))
        claimed[int(release["audit_seq"])] += 1
        if entry is None or entry.payload_digest != release["digest"]:
            leaks.append(f"no audit entry with its digest: {where}")
        elif entry.recipient_id != answer.party.recipient or entry.decision == "denied":
            leaks.append(f"audit entry {entry.seq} is not this release: {where}")
        elif not_in_entry := (named & grant_ids) - {*entry.grant_ids, entry.subject_ref}:
            leaks.append(f"audit entry {entry.seq} does not name {sorted(not_in_entry)}: {where}")
        elif set(document) - {"release"} in ({"vehicles"}, {"grants"}):  # a listing
            sent = {k: v for k, v in document.items() if k != "release"}
            if document_digest(sent) != entry.payload_digest:
                leaks.append(f"listing digest differs from its audit entry: {where}")
        elif "records" in document and entry.record_count != len(document["records"]):
            leaks.append(f"audit entry {entry.seq} counts other records: {where}")
    leaks += [f"audit entry {seq} claimed by {n} answers" for seq, n in claimed.items() if n > 1]
    assert not leaks, "\n".join(leaks[:40]) + f"\n({len(leaks)} in all)"
    assert set(EXPECTED) <= seen_allowed, (
        f"never seen where allowed: {set(EXPECTED) - seen_allowed}"
    )
    answered = {(a.method, a.route) for a in scan.answers if 200 <= a.status < 300}
    walked = {(o.method, o.path) for o in recipient_operations(world.client.server.app)}
    assert walked <= answered, f"routes never answered 2xx: {sorted(walked - answered)}"


def _positions_of_location_off(document: Any, where: str, leaks: list[str]) -> None:
    stack = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            lat = item.get("latitude")
            if isinstance(lat, int | float) and abs(lat - LOCATION_OFF[0]) < 0.5:
                leaks.append(f"a position of the location-off vehicle in {where}")
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def check_webhooks(
    received: list[tuple[str, bytes, dict[str, str]]],
    secrets: dict[str, str],
    world: ScanWorld,
    log: dict[int, AuditEntry],
    types: list[str],
) -> None:
    by_key = {p.key: p for p in world.parties}
    found_canaries = canaries(world)
    leaks: list[str] = []
    seen: set[str] = set()
    claimed: Counter[int] = Counter()
    for key, body, headers in received:
        party = by_key[key]
        message = standardwebhooks.Webhook(secrets[key]).verify(body, headers)
        seen.add(message["type"])
        where = f"{party.key} {message['type']}"
        for name in found_canaries.found(surfaces(message_texts(body, headers))):
            if not allowed(name, party):
                leaks.append(f"{name} in webhook {where}")
        _positions_of_location_off(message, where, leaks)
        if message["type"] == "ping":
            continue
        data = dict(message["data"])
        seq = data.pop("audit_seq", None)
        entry = log.get(seq) if isinstance(seq, int) else None
        claimed[seq] += 1
        if entry is None or entry.recipient_id != party.recipient or entry.decision == "denied":
            leaks.append(f"webhook {where} has no audit entry of its own")
        elif entry.kind == "event" and entry.payload_digest != document_digest(data):
            leaks.append(f"webhook {where}: digest differs from audit entry {seq}")
    leaks += [f"audit entry {seq} claimed by {n} messages" for seq, n in claimed.items() if n > 1]
    assert not leaks, "\n".join(leaks[:40])
    expected = set(types)
    assert expected <= seen, f"event types never delivered: {sorted(expected - seen)}"
