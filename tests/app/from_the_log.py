"""What a customer's copy and transfer history must hold, computed straight from the audit
log (:func:`broker.store.audit.read`) and the grant and vehicle tables, independently of
the customer app's own queries (importable as ``app.from_the_log``).

An entry concerns a customer when something left under one of their grants, or under a
vehicle-linked grant of a vehicle they held (owned or drove) then — the records'
``details.recorded`` span, else the entry's time — or when it is an eligibility answer
about a vehicle they held at the entry's time (its ``subject_ref`` is the vehicle's
audit reference). A recipient's listings and notices-feed pages of one UTC day naming
the same of the customer's grants are one item of the copy, counting them.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select

from broker.clock import parse_instant
from broker.gate.keyring import Keyring
from broker.store import audit as audit_store
from broker.store.tables import GrantRow, VehiclePartyRow

#: What leaves under a grant (the entry names it in ``grant_ids``).
UNDER_GRANTS = frozenset({"release", "listing", "event", "notice", "notice_feed"})
#: What leaves about a vehicle under no grant (the entry names the vehicle's reference).
ABOUT_A_VEHICLE = frozenset({"eligibility"})
#: What a recipient's polling repeats.
REPEATED = frozenset({"listing", "notice_feed"})
RELEASED = frozenset({"released", "partial"})
#: An item's fields that are its newest entry's.
_AS_LOGGED = ("categories", "record_count", "protection", "channel", "legal_basis", "contract_id")


def visible_grants(session: Any, customer_id: str) -> set[str]:
    """The grants the customer's copy shows: their own, and the vehicle-linked grants of
    every vehicle they ever held."""
    own, linked, _ = _grants_and_periods(session, customer_id)
    return own | set(linked)


def expected_transfers(session: Any, customer_id: str, keyring: Keyring) -> list[dict[str, Any]]:
    """The audit log's entries (oldest first, as JSON) of what left about the customer."""
    own, linked, periods = _grants_and_periods(session, customer_id)
    refs = {keyring.vehicle_ref(vin): vin for vin, _, _ in periods}

    def under_their_grant(e: Any) -> bool:
        if own & set(e.grant_ids):
            return True
        span = e.details.get("recorded", {})
        first = parse_instant(span["from"]) if span else e.at
        last = parse_instant(span["to"]) if span else e.at
        return any(
            vin == linked[g] and last >= since and (until is None or first < until)
            for g in set(e.grant_ids) & set(linked)
            for vin, since, until in periods
        )

    def about_their_vehicle(e: Any) -> bool:
        vin = refs.get(e.subject_ref)
        return any(
            v == vin and since <= e.at and (until is None or e.at < until)
            for v, since, until in periods
        )

    return [
        e.to_json()
        for e in audit_store.read(session, limit=1_000_000)
        if e.decision in RELEASED
        and (
            (e.kind in UNDER_GRANTS and under_their_grant(e))
            or (e.kind in ABOUT_A_VEHICLE and about_their_vehicle(e))
        )
    ]


def expected_items(entries: list[dict[str, Any]], visible: set[str]) -> list[dict[str, Any]]:
    """``entries`` as the copy's items, newest first: ``seq`` the newest entry an item
    stands for, ``first_seq`` the oldest, ``occurrences`` how many, and the destination
    countries and mechanisms over all of them."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for e in sorted(entries, key=lambda e: e["seq"], reverse=True):
        shown = tuple(g for g in e["grant_ids"] if g in visible)
        key = (
            (e["recipient_id"], e["kind"], e["at"][:10], shown)
            if e["kind"] in REPEATED
            else (e["seq"],)
        )
        groups.setdefault(key, []).append(e)
    items = []
    for group in groups.values():
        newest = group[0]
        items.append(
            {
                "seq": newest["seq"],
                "first_seq": group[-1]["seq"],
                "kind": newest["kind"],
                "occurrences": len(group),
                "recipient": newest["recipient_id"],
                "grants": [g for g in newest["grant_ids"] if g in visible],
                "destination_countries": sorted(
                    {c for e in group for c in e["destination_countries"]}
                ),
                "transfer_mechanisms": sorted({m for e in group for m in e["transfer_mechanisms"]}),
                **{key: newest[key] for key in _AS_LOGGED},
            }
        )
    return items


def as_items(transfers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The copy's (or the history's) items, in the shape of :func:`expected_items`."""
    return [
        {
            "seq": t["seq"],
            "first_seq": t["first_seq"],
            "kind": t["kind"],
            "occurrences": t["occurrences"],
            "recipient": t["recipient"]["id"],
            "grants": t["grants"],
            "destination_countries": t["destination_countries"],
            "transfer_mechanisms": t["transfer_mechanisms"],
            "categories": t["categories"],
            "record_count": t["record_count"],
            "protection": t["protection"],
            "channel": t["channel"],
            "legal_basis": t["legal_basis"],
            "contract_id": t["contract"],
        }
        for t in transfers
    ]


def assert_recipients_match(
    recipients: list[dict[str, Any]], entries: list[dict[str, Any]]
) -> None:
    """The copy's recipients: each one the entries went to, counting every entry."""
    by_id = {r["id"]: r for r in recipients}
    assert set(by_id) == {e["recipient_id"] for e in entries}
    for recipient_id, summary in by_id.items():
        theirs = [e for e in entries if e["recipient_id"] == recipient_id]
        assert summary["transfers"] == len(theirs), recipient_id
        assert summary["records"] == sum(e["record_count"] for e in theirs), recipient_id
        assert summary["kinds"] == sorted({e["kind"] for e in theirs}), recipient_id
        assert summary["destination_countries"] == sorted(
            {c for e in theirs for c in e["destination_countries"]}
        ), recipient_id
        assert summary["transfer_mechanisms"] == sorted(
            {m for e in theirs for m in e["transfer_mechanisms"]}
        ), recipient_id


def assert_copy_matches_the_log(kit: Any, copy: dict[str, Any], customer_id: str) -> None:
    """The copy lists the audit log's entries about the customer, entry for entry: each
    item is one entry, or one day's repeats of a listing or feed page counted in
    ``occurrences``; its recipients count every entry."""
    broker = kit.site.broker
    expected, visible = broker.database.run_sync(
        lambda s: (
            expected_transfers(s, customer_id, broker.keyring),
            visible_grants(s, customer_id),
        )
    )
    assert as_items(copy["transfers"]) == expected_items(expected, visible)
    assert sum(t["occurrences"] for t in copy["transfers"]) == len(expected)
    assert_recipients_match(copy["recipients"], expected)


def _grants_and_periods(
    session: Any, customer_id: str
) -> tuple[set[str], dict[str, str], list[tuple[str, Any, Any]]]:
    own = {g.id for g in session.exec(select(GrantRow).where(GrantRow.customer_id == customer_id))}
    periods = [
        (p.vin, p.since, p.until)
        for p in session.exec(
            select(VehiclePartyRow).where(VehiclePartyRow.customer_id == customer_id)
        )
    ]
    linked = {
        g.id: g.vin
        for g in session.exec(
            select(GrantRow).where(
                col(GrantRow.vin).in_({vin for vin, _, _ in periods}),
                col(GrantRow.customer_id).is_(None),
            )
        )
    }
    return own, linked, periods
