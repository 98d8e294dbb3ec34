"""Joining a pseudonymised copy to an identified one, tried for real over HTTP.

The insurer (identified, VINs) and a development partner (pseudonymised pull) both
pull the same vehicle's records. Each join a recipient (or two colluding ones)
could run by equality is run: by cursor, by record id, by exact time, and by
bisecting ``since``/``until``; none may pair a pseudonymised record with its
identified twin. Linkage by *values* is measured per contract and reported (the
test output and ``record_property``), not asserted to be zero: it is what the
contract's transforms leave.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import defaultdict
from contextlib import aclosing, suppress
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from oauth_site import Site
from pull_site import client_token, code_flow, drive, insurer_client
from worlds import COOPER, NOW

from broker.clock import format_instant, parse_instant
from broker.domain.contracts import Contract
from broker.protection.transforms import DROPPED, apply_transform, floor_instant
from broker.store import audit as audit_store
from broker.store import contracts as contract_store

SINCE = format_instant(NOW)
UNTIL = format_instant(NOW + timedelta(hours=6))
PULL_CONTRACT = "devpartner-pull"
MINUTES = 90  # of driving, one status record a minute: 7 buckets of 15 minutes


def pseudonymised_contract(site: Site, *, contract_id: str, recipient: str) -> Contract:
    """The development partner's terms (pseudonymised, its transforms), over pull."""
    path = site.broker.documents.samples_dir / "development-partner.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    document.update(id=contract_id, recipient=recipient, channels=["pull"])
    document["categories"] = {"vehicle.status": document["categories"]["vehicle.status"]}
    transforms = document["protection"]["transforms"]
    document["protection"]["transforms"] = {
        target: spec for target, spec in transforms.items() if target.startswith("vehicle.status.")
    }
    if recipient == "rcp-insurer":
        document["processing_countries"] = ["NL"]
    contract = site.broker.documents.contract_from_document(document)

    def add(session: Any) -> None:
        contract_store.add(session, contract, at=NOW - timedelta(days=2))
        site.broker.grants.create(
            session, contract=contract, vin=COOPER, at=NOW - timedelta(days=1)
        )

    site.broker.database.run_sync(add, write=True)
    return contract


async def pull_all(
    get: Any, url: str, **params: str
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Every page: the records, the next_cursor values and the Link headers."""
    records: list[dict[str, Any]] = []
    cursors: list[str] = []
    links: list[str] = []
    cursor = None
    while True:
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        status, body, headers = await get(url, query)
        assert status == 200, body
        records += body["records"]
        cursor = body["next_cursor"]
        if cursor is None:
            return records, cursors, links
        cursors.append(cursor)
        links.append(headers["Link"])


def decodings(text: str) -> list[bytes]:
    """``text`` and every base64/base64url reading of it (what a curious recipient tries)."""
    found = [text.encode()]
    for decode in (base64.urlsafe_b64decode, base64.b64decode):
        with suppress(binascii.Error, ValueError):
            found.append(decode(text + "=" * (-len(text) % 4)))
    return found


@pytest.fixture
async def copies(site: Site) -> dict[str, Any]:
    """The identified copy (insurer, DPoP code flow) and the pseudonymised copy
    (development partner, client credentials) of 90 minutes of COOPER's status."""
    pseudonymised_contract(site, contract_id=PULL_CONTRACT, recipient="rcp-devpartner")
    client = insurer_client(site)
    async with aclosing(client):
        await code_flow(site, client)
        site.clock.set(NOW + timedelta(hours=6))
        drive(site, COOPER, NOW + timedelta(minutes=1), MINUTES)
        site.clock.set(NOW + timedelta(seconds=10))

        async def insurer_get(url: str, params: dict[str, str]) -> tuple[int, Any, Any]:
            response = await client.get(url, params=params)
            return response.status_code, response.json(), response.headers

        url = f"{site.base}/v1/recipient/vehicles/{COOPER}/records"
        identified = await pull_all(
            insurer_get, url, category="vehicle.status", since=SINCE, until=UNTIL, limit="20"
        )
    token = await client_token(site, "devpartner-demo", "vehicle.status:read")
    handle = site.broker.keyring.pseudonymiser("rcp-devpartner", PULL_CONTRACT).vehicle(COOPER)

    async def partner_get(path: str, params: dict[str, str]) -> tuple[int, Any, Any]:
        response = await site.browser.get(
            path, params=params, headers={"Authorization": f"Bearer {token}"}
        )
        return response.status, await response.json(), response.headers

    path = f"/v1/recipient/vehicles/{handle}/records"
    pseudonymised = await pull_all(partner_get, path, since=SINCE, until=UNTIL, limit="20")
    return {
        "identified": identified,
        "pseudonymised": pseudonymised,
        "partner_get": partner_get,
        "partner_path": path,
        "insurer_cursor": identified[1][0],
        "partner_cursor": pseudonymised[1][0],
    }


async def test_no_cursor_id_or_time_joins_the_copies_and_cursors_are_sealed(
    site: Site, copies: dict[str, Any], record_property: Any
) -> None:
    identified, id_cursors, id_links = copies["identified"]
    pseudonymised, ps_cursors, ps_links = copies["pseudonymised"]
    assert len(identified) == len(pseudonymised) == MINUTES
    maker_ids = [f"ds-{COOPER[-5:]}-{m}" for m in range(MINUTES)]

    # By cursor: nothing in a cursor or Link decodes to a record id, the VIN or a time,
    # and no cursor of one copy is a cursor of the other.
    exact_times = {r["recorded_at"] for r in identified}
    linked = [parse_qs(urlsplit(link.split(">")[0].lstrip("<")).query) for link in id_links]
    linked += [parse_qs(urlsplit(link.split(">")[0].lstrip("<")).query) for link in ps_links]
    assert [q["cursor"][0] for q in linked] == [*id_cursors, *ps_cursors]
    for token in [*id_cursors, *ps_cursors]:
        for raw in decodings(token):
            text = raw.decode("latin-1")
            assert COOPER not in text and f"ds-{COOPER[-5:]}" not in text
            assert not any(t in text or t[:16] in text for t in exact_times)
    assert not set(id_cursors) & set(ps_cursors)

    # By record id: every recipient has its own ids; none is the car maker's.
    identified_ids = {r["id"] for r in identified}
    pseudonymised_ids = {r["id"] for r in pseudonymised}
    assert len(identified_ids) == len(pseudonymised_ids) == MINUTES  # stable, one per record
    assert not identified_ids & pseudonymised_ids
    assert not (identified_ids | pseudonymised_ids) & set(maker_ids)

    # By exact time: the pseudonymised copy has times on 15-minute boundaries only, so an
    # equality join pairs an identified record with every pseudonymised record of its
    # bucket (when its time happens to be a boundary) or with none: it tells the bucket,
    # never which record of it is the twin. (Before: every one paired one-to-one.)
    for record in pseudonymised:
        at = parse_instant(record["recorded_at"])
        assert at == floor_instant(at, site_precision()), record["recorded_at"]
    by_time: dict[str, list[str]] = defaultdict(list)
    for record in pseudonymised:
        by_time[record["recorded_at"]].append(record["id"])
    proposed = correct = one_to_one = 0
    truth = twins(site)
    for record in identified:
        partners = by_time.get(record["recorded_at"], [])
        proposed += len(partners)
        correct += sum(truth.get(p) == record["id"] for p in partners)
        one_to_one += len(partners) == 1  # only a bucket holding a single record
    precision = correct / proposed if proposed else 0.0
    record_property("exact_time_join_precision", precision)
    print(
        f"\nexact-time join: {proposed} pairs proposed, {correct} right ({precision:.1%}), "
        f"{one_to_one} one-to-one (buckets of a single record)"
    )
    assert precision < 0.1  # chance within a 15-minute bucket of 15 records
    assert one_to_one <= 1  # the drive's last minute is alone in its bucket

    # Value linkage (measured, not asserted zero): a pseudonymised record links when
    # exactly one identified record has its time bucket and, under the pseudonymised
    # contract's own transforms, its values.
    contract = site.broker.database.run_sync(lambda s: contract_store.latest(s, PULL_CONTRACT))
    assert contract is not None
    linked = linked_right = 0
    for record in pseudonymised:
        matches = [i for i in identified if values_match(record, i, contract)]
        if len(matches) == 1:
            linked += 1
            linked_right += truth.get(record["id"]) == matches[0]["id"]
    fraction = linked / len(pseudonymised)
    record_property(f"value_linkage[{PULL_CONTRACT}]", fraction)
    print(
        f"value linkage under {PULL_CONTRACT}: {linked}/{len(pseudonymised)} pseudonymised "
        f"records match exactly one identified record ({fraction:.1%}; {linked_right} right)"
    )

    # A cursor replayed by another recipient, altered, or under another query: refused.
    get, path = copies["partner_get"], copies["partner_path"]
    params = {"since": SINCE, "until": UNTIL, "limit": "20"}
    status, _, _ = await get(path, dict(params, cursor=copies["partner_cursor"]))
    assert status == 200
    cursor = copies["partner_cursor"]
    tampered = cursor[:20] + ("A" if cursor[20] != "A" else "B") + cursor[21:]
    cases = {
        "another recipient's": copies["insurer_cursor"],
        "tampered": tampered,
        "not a cursor": "not-a-cursor",
    }
    for name, value in cases.items():
        status, body, _ = await get(path, dict(params, cursor=value))
        assert status == 400, name
        assert "cursor" in body["detail"], name
    other_query = dict(params, since=format_instant(NOW + timedelta(minutes=15)))
    status, body, _ = await get(path, dict(other_query, cursor=cursor))
    assert status == 400 and "parameters" in body["detail"]


async def test_bisecting_since_and_until_learns_nothing_below_the_precision(
    site: Site, copies: dict[str, Any]
) -> None:
    """A recipient that tracks one record (by its stable id) across ranges learns
    only its bucket: every ``since`` or ``until`` inside a bucket gives the same answer."""
    get, path = copies["partner_get"], copies["partner_path"]
    pseudonymised = copies["pseudonymised"][0]
    target = next(r for r in pseudonymised if r["recorded_at"] == format_instant(NOW))
    bucket = parse_instant(target["recorded_at"])
    # Its real time is 12:01..12:14 (the drive starts at 12:01); bisect it in [12:00, 12:15).
    for bound in ("since", "until"):
        low, high = bucket, bucket + timedelta(minutes=15)
        answers = set()
        for _ in range(12):
            middle = low + (high - low) / 2
            since = middle if bound == "since" else bucket
            until = middle if bound == "until" else bucket + timedelta(hours=1)
            status, body, _ = await get(
                path, {"since": format_instant(since), "until": format_instant(until)}
            )
            assert status == 200, body
            for edge in ("since", "until"):
                at = parse_instant(body[edge])
                assert at == floor_instant(at, site_precision())  # the echo is coarse too
            present = target["id"] in {r["id"] for r in body["records"]}
            answers.add(present)
            if (bound == "since") == present:
                low = middle
            else:
                high = middle
        assert len(answers) == 1, bound  # one answer across the bucket: nothing learnt


async def test_a_recipient_holding_the_vehicle_identified_gets_no_pseudonymised_copy(
    site: Site,
) -> None:
    contract = pseudonymised_contract(site, contract_id="insurer-research", recipient="rcp-insurer")
    drive(site, COOPER, NOW - timedelta(hours=3), 30)
    token = await client_token(site, "insurer-demo", "vehicle.status:read")
    handle = site.broker.keyring.pseudonymiser("rcp-insurer", contract.id).vehicle(COOPER)
    response = await site.browser.get(
        f"/v1/recipient/vehicles/{handle}/records",
        params={"contract": contract.id, "since": format_instant(NOW - timedelta(hours=4))},
        headers={"Authorization": f"Bearer {token}"},
    )
    # Answered like a vehicle without a grant: saying why would link the pseudonym.
    assert response.status == 404, await response.text()
    assert "identified" not in await response.text()
    entries = site.broker.database.run_sync(lambda s: audit_store.read(s, start=0, limit=10_000))
    [entry] = [e for e in entries if e.contract_id == contract.id and e.kind == "denial"]
    assert any("identified under another contract" in r for r in entry.reasons)


def site_precision() -> Any:
    from broker.domain.contracts import DEFAULT_PSEUDONYMISED_TIME_PRECISION

    return DEFAULT_PSEUDONYMISED_TIME_PRECISION


def twins(site: Site) -> dict[str, str]:
    """Ground truth (the broker's, not a recipient's): pseudonymised id -> identified id."""
    from broker.protection.protect import RECORD_ID_PREFIX

    def rid(recipient: str, contract: str, record_id: str) -> str:
        pseudonym = site.broker.keyring.pseudonymiser(recipient, contract).pseudonym(
            "record", record_id
        )
        return RECORD_ID_PREFIX + pseudonym[4:]

    return {
        rid("rcp-devpartner", PULL_CONTRACT, maker): rid("rcp-insurer", "insurer-ubi", maker)
        for maker in (f"ds-{COOPER[-5:]}-{m}" for m in range(MINUTES))
    }


def values_match(pseudonymised: dict[str, Any], identified: dict[str, Any], terms: Any) -> bool:
    if pseudonymised["category"] != identified["category"]:
        return False
    bucket = floor_instant(parse_instant(identified["recorded_at"]), site_precision())
    if format_instant(bucket) != pseudonymised["recorded_at"]:
        return False
    for name, value in pseudonymised["data"].items():
        if name not in identified["data"]:
            continue
        transform = terms.protection.transform_for(f"{pseudonymised['category']}.{name}")
        theirs = identified["data"][name]
        if transform is not None:
            theirs = apply_transform(theirs, transform, None)  # type: ignore[arg-type]
            if theirs is DROPPED:
                continue
        if theirs != value:
            return False
    return True
