"""The copy of my data (GDPR Art. 15 and 20): what is held, and every recipient it went to
— checked against the audit log, read independently of the customer app's own queries."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from app import from_the_log
from app.from_the_log import assert_copy_matches_the_log
from worlds import COOPER, COUNTRYMAN, NOW

from broker.audit.entry import canonical_json
from broker.commands import audit as audit_command
from broker.domain.contracts import Channel
from broker.gate.release import Release
from broker.store import audit as audit_store

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def expected_transfers(session: Any, customer_id: str, keyring: Any) -> list[dict[str, Any]]:
    """Straight from the audit store (see :mod:`app.from_the_log`): every entry of
    something that left about the customer, of every kind (releases, listings, events,
    notices, notices-feed pages, eligibility answers)."""
    return from_the_log.expected_transfers(session, customer_id, keyring)


def anna_expected_transfers(kit: Any) -> list[dict[str, Any]]:
    keyring = kit.site.broker.keyring
    return kit.site.broker.database.run_sync(lambda s: expected_transfers(s, "cus-anna", keyring))


async def make_transfers(kit: Any) -> None:
    kit.ingest(
        [
            kit.record(f"s-{n}", COOPER, "vehicle.status", NOW - n * HOUR, kit.STATUS)
            for n in range(1, 3)
        ]
        + [kit.record("p-1", COOPER, "vehicle.position", NOW - HOUR, kit.POSITION)]
        + [
            kit.record(
                "e-1", COOPER, "vehicle.environment", NOW - HOUR, {"outside_temperature_c": 11.5}
            )
        ]
        # bram's Countryman since 1 March: not anna's data any more
        + [kit.record("s-bram", COUNTRYMAN, "vehicle.status", NOW - HOUR, kit.STATUS)]
    )
    assert isinstance(await kit.release(), Release)  # insurer, pull, identified, NL
    partner = await kit.release(
        recipient="rcp-devpartner", contract="development-partner", purpose="product-quality",
        channel=Channel.DATASPACE, categories=frozenset({"vehicle.status"}),
    )  # fmt: skip
    assert isinstance(partner, Release)  # pseudonymised, DE (EEA) + IN (SCC)
    dealer = await kit.release(
        recipient="rcp-dealer", contract="dealer-service", purpose="repair-and-warranty",
        categories=frozenset({"vehicle.status"}), vin=COUNTRYMAN,
    )  # fmt: skip
    assert isinstance(dealer, Release)  # bram's vehicle now: never in anna's copy


async def test_the_copys_recipients_and_transfers_match_the_audit_log(kit: Any) -> None:
    await make_transfers(kit)
    token = await kit.token("anna")
    status, copy, response = await kit.api("GET", "/v1/me/export", token)
    assert status == 200
    assert response.headers["Content-Disposition"].startswith("attachment; filename=")
    assert response.headers["Cache-Control"] == "no-store"

    expected = anna_expected_transfers(kit)
    assert len(expected) == 2
    assert_copy_matches_the_log(kit, copy, "cus-anna")
    assert [t["seq"] for t in copy["transfers"]] == sorted(
        (e["seq"] for e in expected), reverse=True
    )
    by_seq = {e["seq"]: e for e in expected}
    for transfer in copy["transfers"]:
        entry = by_seq[transfer["seq"]]
        assert transfer["recipient"]["id"] == entry["recipient_id"]
        for key in ("categories", "record_count", "protection", "channel",
                    "destination_countries", "transfer_mechanisms", "legal_basis"):  # fmt: skip
            assert transfer[key] == entry[key], key
    recipients = {r["id"]: r for r in copy["recipients"]}
    assert set(recipients) == {e["recipient_id"] for e in expected}
    for recipient_id, summary in recipients.items():
        entries = [e for e in expected if e["recipient_id"] == recipient_id]
        assert summary["transfers"] == len(entries)
        assert summary["destination_countries"] == sorted(
            {c for e in entries for c in e["destination_countries"]}
        )
        assert summary["transfer_mechanisms"] == sorted(
            {m for e in entries for m in e["transfer_mechanisms"]}
        )
    assert "scc:SCC-DEMO-2025-017" in recipients["rcp-devpartner"]["transfer_mechanisms"]


async def test_a_vehicles_transfers_follow_whose_data_it_was(kit: Any) -> None:
    """anna sold the Countryman to bram on 1 March; the dealer's grant is linked to the
    vehicle, not to either of them. Each sees the dealer's releases of data recorded while
    they held it — anna after the sale too (her copy, Art. 15) — and never the other's."""
    sale = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    kit.ingest(
        [kit.record("s-anna", COUNTRYMAN, "vehicle.status", sale - 10 * DAY, kit.STATUS),
         kit.record("s-bram", COUNTRYMAN, "vehicle.status", NOW - HOUR, kit.STATUS)]
    )  # fmt: skip

    async def dealer(since: datetime, until: datetime) -> int:
        outcome = await kit.release(
            recipient="rcp-dealer", contract="dealer-service", purpose="repair-and-warranty",
            categories=frozenset({"vehicle.status"}), vin=COUNTRYMAN, since=since, until=until,
        )  # fmt: skip
        assert isinstance(outcome, Release) and len(outcome.payload.records) >= 1
        return outcome.audit_seq

    annas = await dealer(sale - 20 * DAY, sale)  # pulled after the sale, recorded before
    brams = await dealer(sale, NOW)
    both = await dealer(sale - 20 * DAY, NOW)

    _, copy, _ = await kit.api("GET", "/v1/me/export", await kit.token("anna"))
    dealer_seqs = [t["seq"] for t in copy["transfers"] if t["recipient"]["id"] == "rcp-dealer"]
    assert dealer_seqs == [both, annas]
    assert "rcp-dealer" in {r["id"] for r in copy["recipients"]}
    former = next(g for g in copy["grants"] if g["id"] == "gr-d7128454ce8cc11b")
    assert former["rights"]["allowed"] == []  # no longer hers to object to

    bram = await kit.token("bram")
    _, history, _ = await kit.api("GET", "/v1/me/grants/gr-d7128454ce8cc11b/transfers", bram)
    assert [t["seq"] for t in history["items"]] == [both, brams]
    _, theirs, _ = await kit.api("GET", "/v1/me/export", bram)
    assert annas not in {t["seq"] for t in theirs["transfers"]}

    for customer_id, mine in (("cus-anna", copy), ("cus-bram", theirs)):
        assert_copy_matches_the_log(kit, mine, customer_id)


def logged(kit: Any, kind: str) -> list[dict[str, Any]]:
    """The audit log's entries of one kind, read straight from the audit store."""
    entries = kit.site.broker.database.run_sync(lambda s: audit_store.read(s, limit=100_000))
    return [e.to_json() for e in entries if e.kind == kind]


async def test_every_copy_handed_out_is_audited_and_never_a_transfer(kit: Any) -> None:
    await make_transfers(kit)
    token = await kit.token("anna")  # also logs anna in on the pages
    path = f"/v1/me/vehicles/{COOPER}/location"
    off = {"collection": False, "sharing": False}
    assert (await kit.api("PUT", path, token, json=off))[0] == 200  # a location_setting entry
    assert len(logged(kit, "location_setting")) == 1

    status, first, _ = await kit.api("GET", "/v1/me/export", token)
    assert status == 200
    assert audit_command(kit.site.broker, "checkpoint")[0]  # a signed tree over the first
    page = await kit.site.browser.get("/export")  # the download button
    assert page.status == 200
    second = json.loads(await page.read())

    # Exactly two subject_access entries, one per copy, without the VIN or contact data.
    copies = logged(kit, "subject_access")
    assert len(copies) == 2
    for entry in copies:
        text = canonical_json(entry).decode()
        for secret in (COOPER, COUNTRYMAN, "cus-anna", "Anna de Vries", "anna.devries@"):
            assert secret not in text, secret
        assert entry["decision"] == "recorded" and entry["recipient_id"] == ""
        assert entry["grant_ids"] == [] and entry["subject_ref"].startswith("customer:psn_")
        assert entry["details"]["format"] == second["format"]
        assert entry["details"]["records"] == len(second["telemetry"]["records"]) == 4
        assert entry["details"]["transfers"] == len(second["transfers"]) == 2
        assert entry["details"]["grants"] == len(second["grants"])
    assert copies[0]["subject_ref"] == copies[1]["subject_ref"]  # the same customer, keyed

    # Neither a copy nor a location change is a transfer: the copies, the grant's
    # transfer history and the overview all list exactly the audit log's releases.
    expected = anna_expected_transfers(kit)
    seqs = sorted((e["seq"] for e in expected), reverse=True)
    assert [t["seq"] for t in first["transfers"]] == seqs
    assert [t["seq"] for t in second["transfers"]] == seqs
    assert first["recipients"] == second["recipients"]
    assert sum(r["transfers"] for r in second["recipients"]) == len(expected)
    insurer = [e["seq"] for e in expected if "gr-677f38bc93017473" in e["grant_ids"]]
    _, history, _ = await kit.api("GET", "/v1/me/grants/gr-677f38bc93017473/transfers", token)
    assert [t["seq"] for t in history["items"]] == insurer and history["total"] == 1
    _, overview, _ = await kit.api("GET", "/v1/me/grants", token)
    counts = {g["id"]: g["transfer_count"] for v in overview["vehicles"] for g in v["grants"]}
    assert sum(counts.values()) == sum(len(g["transfers"]) for g in second["grants"]) == 2
    assert counts["gr-677f38bc93017473"] == 1

    # The log with its new entries still verifies, as `broker audit verify` says.
    ok, lines = audit_command(kit.site.broker, "verify")
    assert ok, lines
    size = kit.site.broker.database.run_sync(audit_store.size)
    assert lines == [f"audit log OK: {size} entries; {size - 1} covered by a signed checkpoint"]


async def test_the_copy_holds_account_contact_vehicles_grants_and_own_telemetry(
    kit: Any,
) -> None:
    await make_transfers(kit)
    token = await kit.token("anna")
    _, copy, _ = await kit.api("GET", "/v1/me/export", token)
    assert copy["account"] == {"id": "cus-anna", "login": "anna", "language": "nl"}
    assert copy["contact"]["name"] == "Anna de Vries"  # decrypted from the vault
    assert copy["contact"]["email"] == "anna.devries@example.nl"
    vehicles = {v["vin"]: v for v in copy["vehicles"]}
    assert vehicles[COUNTRYMAN]["until"] == "2026-03-01T12:00:00Z"
    assert vehicles[COOPER]["role"] == "owner"
    assert {g["id"] for g in copy["grants"]} >= {"gr-677f38bc93017473", "gr-884d49b5e7153545"}
    insurer = next(g for g in copy["grants"] if g["id"] == "gr-677f38bc93017473")
    assert len(insurer["transfers"]) == 1 and insurer["history"]
    assert {p["legal_basis"] for p in copy["purposes"]} == {"6(1)(a)", "6(1)(f)"}
    records = {r["id"]: r for r in copy["telemetry"]["records"]}
    assert set(records) == {"s-1", "s-2", "p-1", "e-1"}  # never bram's Countryman record
    assert records["p-1"]["data"]["latitude"] == 52.370216  # encrypted at rest, opened for her
    assert copy["telemetry"]["counts"]["vehicle.status"] == 2

    bram = await kit.token("bram")
    _, theirs, _ = await kit.api("GET", "/v1/me/export", bram)
    assert {r["id"] for r in theirs["telemetry"]["records"]} == {"s-bram"}
    assert theirs["contact"]["name"] == "Bram Jansen"
    assert "gr-677f38bc93017473" not in {g["id"] for g in theirs["grants"]}
    assert_copy_matches_the_log(kit, theirs, "cus-bram")
    # (bram also drives anna's Cooper: its vehicle-linked releases concern him too)
