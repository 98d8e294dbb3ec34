"""What left the broker about one customer, read from the audit log, as they are shown it.

Everything that leaves the broker is an audit entry; a customer sees the ones about them:

* under a grant they may see (:func:`broker.store.customer_view.releases_for`: data
  releases, listings, webhook events, notices that a grant ended, notices-feed pages):
  every one under a grant they gave; under a vehicle-linked grant, those of data
  recorded while they held the vehicle, and for an entry without records (a listing,
  an event, a notice), those sent while they held it (a vehicle's earlier or later
  owners and drivers see their own periods only);
* eligibility answers about a vehicle they held, as owner or driver, when the answer
  was given (:func:`about_customer`): there is no grant yet, so the entry names the
  vehicle by the broker's audit reference (:meth:`~broker.gate.keyring.Keyring.vehicle_ref`).

What a recipient's polling repeats (listings, notices-feed pages) is one
:class:`Disclosure` per recipient, kind, UTC day and grants shown, which counts the
entries it stands for (``occurrences``); anything else is one per entry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session

from broker.audit.entry import AuditEntry
from broker.clock import format_instant, parse_instant
from broker.domain.grants import Grant
from broker.gate.keyring import Keyring
from broker.store import customer_view
from broker.store.customer_view import Holding

#: Entries a recipient's polling repeats: one item per recipient, kind, day and grants.
REPEATED = frozenset({"listing", "notice_feed"})


@dataclass(frozen=True)
class Disclosure:
    """One item of what left about the customer: an audit entry, or a day's repeats of one."""

    entry: AuditEntry  # the newest entry it stands for
    grants: tuple[str, ...]  # of the grants it relied on, those the customer may see
    vins: tuple[str, ...]  # the customer's vehicles it is about
    occurrences: int  # how many entries it stands for
    first: AuditEntry  # the oldest of them (``entry`` itself when just one)
    records: int  # records released, over every entry it stands for
    countries: tuple[str, ...]  # destination countries, over every entry
    mechanisms: tuple[str, ...]  # the transfer mechanisms used, over every entry


#: One entry about the customer, with the grants it relied on they may see and its vehicles.
_Found = tuple[AuditEntry, tuple[str, ...], tuple[str, ...]]


def under_grants(session: Session, grants: list[Grant], held: list[Holding]) -> list[Disclosure]:
    """What left under any of ``grants`` that concerns the customer, newest first."""
    return _folded(_under_grants(session, grants, held))


def about_customer(
    session: Session, keyring: Keyring, grants: list[Grant], held: list[Holding]
) -> list[Disclosure]:
    """Everything that left about the customer, newest first: what left under any of
    ``grants`` (see :func:`under_grants`), and the eligibility answers about a vehicle
    at a time they held it (``held``: every period they owned or drove a vehicle)."""
    found = _under_grants(session, grants, held) + _eligibility(session, keyring, held)
    return _folded(sorted(found, key=lambda f: f[0].seq or 0, reverse=True))


def _under_grants(session: Session, grants: list[Grant], held: list[Holding]) -> list[_Found]:
    entries = customer_view.releases_for(
        session, {g.id for g in grants}, {g.recipient_id for g in grants}
    )
    vin_of = {g.id: g.vin for g in grants}
    own = {g.id for g in grants if g.customer_id is not None}
    linked = {g.id: g.vin for g in grants if g.customer_id is None}
    periods: dict[str, list[tuple[datetime, datetime | None]]] = {}
    for h in held:
        periods.setdefault(h.vin, []).append((h.since, h.until))

    def concerns(entry: AuditEntry) -> bool:
        if own.intersection(entry.grant_ids):
            return True
        first, last = _recorded_span(entry)
        return any(
            last >= since and (until is None or first < until)
            for grant_id in linked.keys() & set(entry.grant_ids)
            for since, until in periods.get(linked[grant_id], ())
        )

    found = []
    for entry in entries:
        if concerns(entry):
            shown = tuple(g for g in entry.grant_ids if g in vin_of)
            found.append((entry, shown, tuple(sorted({vin_of[g] for g in shown}))))
    return found


def _eligibility(session: Session, keyring: Keyring, held: list[Holding]) -> list[_Found]:
    """The eligibility answers about a vehicle given while the customer held it."""
    vins = {keyring.vehicle_ref(vin): vin for vin in {h.vin for h in held}}
    return [
        (entry, (), (vins[entry.subject_ref],))
        for entry in customer_view.eligibility_answers(session, vins)
        if any(h.vin == vins[entry.subject_ref] and h.current(entry.at) for h in held)
    ]


def _folded(found: list[_Found]) -> list[Disclosure]:
    """``found`` (newest first) as items, a day's repeats of one recipient folded into one."""
    groups: dict[tuple[Any, ...], list[_Found]] = {}
    for one in found:
        entry, shown, _ = one
        key: tuple[Any, ...] = (
            (entry.recipient_id, entry.kind, entry.at.date(), shown)
            if entry.kind in REPEATED
            else (entry.seq,)
        )
        groups.setdefault(key, []).append(one)
    return [_disclosure(group) for group in groups.values()]  # newest first, as inserted


def _disclosure(group: list[_Found]) -> Disclosure:
    entries = [entry for entry, _, _ in group]
    newest, shown, _ = group[0]
    return Disclosure(
        entry=newest,
        grants=shown,
        vins=_union(vins for _, _, vins in group),
        occurrences=len(entries),
        first=entries[-1],
        records=sum(e.record_count for e in entries),
        countries=_union(e.destination_countries for e in entries),
        mechanisms=_union(e.transfer_mechanisms for e in entries),
    )


def item(disclosure: Disclosure, names: dict[str, str]) -> dict[str, Any]:
    """One item as the customer sees it: of the grants it relied on, only those the
    customer may see (a population release relies on other customers' grants too)."""
    entry = disclosure.entry
    return {
        "seq": entry.seq,
        "kind": entry.kind,
        "occurrences": disclosure.occurrences,
        "first_seq": disclosure.first.seq,
        "first_at": format_instant(disclosure.first.at),
        "at": format_instant(entry.at),
        "recipient": {"id": entry.recipient_id, "name": names.get(entry.recipient_id)},
        "contract": entry.contract_id,
        "grants": list(disclosure.grants),
        "vehicles": list(disclosure.vins),
        "channel": entry.channel,
        "purpose": entry.purpose,
        "categories": list(entry.categories),
        "record_count": entry.record_count,
        "vehicles_in_release": len(entry.grant_ids),
        "protection": entry.protection,
        "destination_countries": list(disclosure.countries),
        "transfer_mechanisms": list(disclosure.mechanisms),
        "legal_basis": entry.legal_basis,
        "decision": entry.decision,
    }


def recipients(disclosures: list[Disclosure], names: dict[str, str]) -> list[dict[str, Any]]:
    """Every recipient something went to, with the safeguards each transfer used
    (``transfers`` counts every entry, each of a day's repeats included)."""
    summary: dict[str, dict[str, Any]] = {}
    for d in disclosures:
        entry = d.entry
        row = summary.setdefault(
            entry.recipient_id,
            {
                "id": entry.recipient_id,
                "name": names.get(entry.recipient_id),
                "transfers": 0,
                "records": 0,
                "kinds": set(),
                "categories": set(),
                "channels": set(),
                "destination_countries": set(),
                "transfer_mechanisms": set(),
                "first": d.first.at,
                "last": entry.at,
            },
        )
        row["transfers"] += d.occurrences
        row["records"] += d.records
        row["kinds"].add(entry.kind)
        row["categories"].update(entry.categories)
        row["channels"].add(entry.channel)
        row["destination_countries"].update(d.countries)
        row["transfer_mechanisms"].update(d.mechanisms)
        row["first"] = min(row["first"], d.first.at)
        row["last"] = max(row["last"], entry.at)
    return [
        {
            key: (
                sorted(value)
                if isinstance(value, set)
                else format_instant(value)
                if isinstance(value, datetime)
                else value
            )
            for key, value in row.items()
        }
        for _, row in sorted(summary.items())
    ]


def _recorded_span(entry: AuditEntry) -> tuple[datetime, datetime]:
    """When the release's records were recorded (first, last); the entry's time for an
    entry that does not say."""
    recorded = entry.details.get("recorded")
    if isinstance(recorded, dict):
        return parse_instant(recorded["from"]), parse_instant(recorded["to"])
    return entry.at, entry.at


def _union(values: Iterable[Iterable[str]]) -> tuple[str, ...]:
    return tuple(sorted({v for group in values for v in group}))
