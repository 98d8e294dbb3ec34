"""The gate's one path: check, minimise, protect, country-check, audit, hand over.

:meth:`Gate.decide` runs inside one write transaction: the grant rows it relies
on are read under a share lock (PostgreSQL; SQLite has one writer), so a
revocation either commits before the release is decided or waits until the
release and its audit entry are committed. The audit entry is appended before
the release is handed to the channel.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlmodel import Session

from broker.audit.entry import AuditEntry
from broker.clock import Clock, format_instant, parse_instant
from broker.domain.contracts import Contract, ProtectionLevel, effective_terms
from broker.domain.grants import Grant
from broker.domain.parties import Period
from broker.domain.vehicle_models import VehicleModels
from broker.gate.announce import Announcement, EventRequest, decide_announcement
from broker.gate.eligibility import decide_eligibility
from broker.gate.group_commit import GroupCommitter
from broker.gate.keyring import Keyring
from broker.gate.listing import Listing, ListingRequest, decide_listing
from broker.gate.release import (
    Denial,
    Eligibility,
    Outcome,
    PopulationTarget,
    Release,
    ReleaseRequest,
    VehicleTarget,
    Withheld,
    seal_for,
)
from broker.policy.release import (
    Reason,
    check_contract,
    check_grant,
    check_recipient,
    pick_grant,
    split_categories,
)
from broker.protection.identifiers import CONTACT_KINDS, IdentifierIndex, IdentifierKind
from broker.protection.protect import (
    ProtectedPayload,
    ProtectionContext,
    SourceRecord,
    Subject,
    protect,
    scrubs_text_of,
    vehicle_reference,
)
from broker.protection.transforms import coarse_range
from broker.store import audit as audit_store
from broker.store import contracts as contract_store
from broker.store import grants as grant_store
from broker.store import identifier_index, telemetry_read
from broker.store import parties as party_store
from broker.store.database import Database
from broker.store.identifier_index import IndexVersion
from broker.transfer.adequacy import AdequacyTable
from broker.transfer.check import TransferDecision, check_transfer
from broker.vault.contacts import load_contact
from broker.vault.vault import Vault

log = logging.getLogger(__name__)

#: A pseudonymised release skips a vehicle the recipient receives identified elsewhere.
IDENTIFIED_ELSEWHERE = "identified_elsewhere"


@dataclass(frozen=True)
class _Vehicle:
    vin: str
    grant: Grant
    terms: Contract
    categories: frozenset[str]
    context: ProtectionContext
    subject: Subject
    #: When the customer who gave the grant owned the vehicle; None: a vehicle-linked grant.
    giver_owned: tuple[Period, ...] | None = None

    def giver_held(self, recorded_at: datetime) -> bool:
        """Whether the grant's giver owned the vehicle when the record was made."""
        if self.giver_owned is None:
            return True
        return any(p.contains(recorded_at) for p in self.giver_owned)


class Gate:
    def __init__(
        self,
        *,
        database: Database,
        clock: Clock,
        adequacy: AdequacyTable,
        keyring: Keyring,
        vault: Vault,
        free_text: frozenset[str] | None = None,
    ) -> None:
        """``free_text``: the catalogue's free-text field targets; None treats every
        string as free text (scrubbed at every level)."""
        self.vault = vault
        self.database = database
        self.clock = clock
        self.adequacy = adequacy
        self.keyring = keyring
        self.free_text = free_text
        self.committer = GroupCommitter(database)
        self._effective: dict[tuple[str, int, int], Contract] = {}
        self._index: tuple[IndexVersion, IdentifierIndex] | None = None
        self._index_lock = threading.Lock()

    async def release(self, request: ReleaseRequest) -> Outcome:
        """Decide ``request`` in the next group commit; the outcome once it is durable."""
        return await self.committer.submit(lambda s: self.decide(s, request, self.clock.now()))

    async def eligibility(
        self, recipient_id: str, contract_id: str, vin: str, *, models: VehicleModels
    ) -> Eligibility | Denial:
        """Which of the contract's categories ``vin``'s model can provide (no data),
        audited (see :mod:`.eligibility`)."""
        return await self.committer.submit(
            lambda s: decide_eligibility(
                s,
                recipient_id,
                contract_id,
                vin,
                self.clock.now(),
                keyring=self.keyring,
                adequacy=self.adequacy,
                models=models,
            )
        )

    async def listing(self, request: ListingRequest) -> Listing | Denial:
        """The vehicles or grants a token covers, decided and audited (see :mod:`.listing`)."""
        return await self.committer.submit(
            lambda s: decide_listing(
                s, request, self.clock.now(), keyring=self.keyring, adequacy=self.adequacy
            )
        )

    async def announce(self, request: EventRequest) -> Announcement | Denial:
        """A grant or fleet event's data, decided now and audited (see :mod:`.announce`)."""
        return await self.committer.submit(
            lambda s: decide_announcement(
                s, request, self.clock.now(), keyring=self.keyring, adequacy=self.adequacy
            )
        )

    async def close(self) -> None:
        await self.committer.close()

    # -- the path -------------------------------------------------------------------------

    def decide(self, session: Session, request: ReleaseRequest, now: datetime) -> Outcome:
        audit_store.serialise(session)  # the audit lock first: one lock order for all writers
        recipient = party_store.recipient(session, request.recipient_id)
        if reasons := check_recipient(recipient):
            return self._deny(session, request, reasons, now)
        assert recipient is not None
        contract = contract_store.latest(session, request.contract_id)
        if reasons := check_contract(
            contract, request.recipient_id, request.channel, request.purpose, now
        ):
            return self._deny(session, request, reasons, now, contract)
        assert contract is not None

        vehicles, withheld, refusals = self._vehicles(session, request, contract, now)
        if not vehicles and refusals:
            return self._deny(session, request, refusals, now, contract)
        # Audited, never told: which vehicle it is would link the pseudonym to its VIN.
        elsewhere = [r for r in refusals if r.code == IDENTIFIED_ELSEWHERE]

        read, shown = _coarsened(request, contract, vehicles)
        records, next_after, outside = self._read(session, read, vehicles)
        withheld += outside
        payload = self._protect(session, records, vehicles, contract)
        if not payload.records and withheld and any(r.reason.count for r in withheld):
            return self._deny(session, request, [w.reason for w in withheld], now, contract)

        transfer = check_transfer(
            recipient, contract.processing_countries, self.adequacy, now.date()
        )
        if not transfer.allowed:
            reasons = [Reason("transfer_not_allowed", r) for r in transfer.reasons]
            return self._deny(session, request, reasons, now, contract, transfer)

        decision = "partial" if withheld or elsewhere else "released"
        entry = self._audit(
            session,
            request,
            now,
            contract,
            kind="release",
            decision=decision,
            reasons=[w.reason for w in withheld] + elsewhere,
            # Nothing read (no category asked is covered): still the grants it concerns.
            grants=[v.grant for v in vehicles.values()] or _concerned(session, request),
            payload=payload,
            transfer=transfer,
        )
        assert entry.seq is not None
        refs = tuple(
            sorted(
                ref
                for v in vehicles.values()
                if (ref := vehicle_reference(v.vin, v.context)) is not None
            )
        )
        return Release(
            request=request,
            payload=payload,
            decision=decision,
            audit_seq=entry.seq,
            withheld=tuple(withheld),
            transfer=transfer.summary(),
            vehicle_refs=refs,
            grant_ids=tuple(sorted(v.grant.id for v in vehicles.values())),
            next_after=next_after,
            seal=seal_for(entry.seq, payload.digest()),
            since=shown[0],
            until=shown[1],
        )

    def _vehicles(
        self, session: Session, request: ReleaseRequest, contract: Contract, now: datetime
    ) -> tuple[dict[str, _Vehicle], list[Withheld], list[Reason]]:
        """Per vehicle: the deciding grant, its effective terms, and the categories it releases."""
        if isinstance(request.target, VehicleTarget):
            candidates = grant_store.for_release(
                session, request.contract_id, vins=[request.target.vin]
            )
        else:
            assert isinstance(request.target, PopulationTarget)
            candidates = grant_store.for_release(session, request.contract_id, vins=None)
        by_vin: dict[str, list[Grant]] = defaultdict(list)
        for grant in candidates:
            if request.customer_id is None or grant.customer_id == request.customer_id:
                by_vin[grant.vin].append(grant)
        if isinstance(request.target, VehicleTarget) and request.target.vin not in by_vin:
            return {}, [], check_grant(None, now)

        settings = telemetry_read.location_settings(session, list(by_vin))
        vehicles: dict[str, _Vehicle] = {}
        withheld: list[Withheld] = []
        refusals: list[Reason] = []
        identified: set[str] | None = None  # read once, and only for a pseudonymised release
        for vin, grants in sorted(by_vin.items()):
            picked = pick_grant(grants, now)
            if reasons := check_grant(picked, now):
                refusals += reasons  # a population skips vehicles without an active grant
                continue
            assert picked is not None
            grant = picked
            if request.within_grant and (reasons := _before_grant(grant, request.since)):
                refusals += reasons
                continue
            terms = self._terms(session, grant, contract)
            if terms.protection.level is ProtectionLevel.PSEUDONYMISED:
                if identified is None:
                    target = request.target
                    wanted = [target.vin] if isinstance(target, VehicleTarget) else None
                    identified = self._identified(session, request.recipient_id, wanted, now)
                if vin in identified:
                    refusals.append(
                        Reason(
                            IDENTIFIED_ELSEWHERE,
                            "the recipient receives this vehicle identified under another "
                            "contract: no pseudonymised copy of it",
                        )
                    )
                    continue
            context = ProtectionContext(
                contract=terms,
                recipient_id=request.recipient_id,
                pseudonymiser=self.keyring.pseudonymiser(request.recipient_id, contract.id),
                location_precision=grant.location_precision,
                free_text=self.free_text,
            )
            setting = settings.get(vin)
            shared = setting is not None and setting.sharing and setting.collection
            categories, reasons = split_categories(request.categories, terms, grant, shared)
            ref = vehicle_reference(vin, context)
            withheld += [Withheld(reason, ref) for reason in reasons]
            if not categories:
                refusals += reasons
                continue
            vehicles[vin] = _Vehicle(
                vin, grant, terms, categories, context, self._subject(session, vin),
                _owned_by_giver(session, grant),
            )  # fmt: skip
        return vehicles, withheld, refusals

    def _identified(
        self, session: Session, recipient_id: str, vins: list[str] | None, now: datetime
    ) -> set[str]:
        """The vehicles the recipient holds an active grant on under an identified contract:
        a pseudonymised copy of one of them would be joined to the identified one."""
        levels: dict[str, ProtectionLevel | None] = {}
        found: set[str] = set()
        for grant in grant_store.of_recipient(session, recipient_id, vins):
            if grant.contract_id not in levels:
                latest = contract_store.latest(session, grant.contract_id)
                levels[grant.contract_id] = latest.protection.level if latest else None
            if levels[grant.contract_id] is ProtectionLevel.IDENTIFIED and grant.is_active(now):
                found.add(grant.vin)
        return found

    def _terms(self, session: Session, grant: Grant, latest: Contract) -> Contract:
        """The grant's effective terms: its consented version intersected with the latest."""
        if grant.contract_version == latest.version:
            return latest
        key = (grant.contract_id, grant.contract_version, latest.version)
        found = self._effective.get(key)
        if found is None:
            consented = contract_store.get(session, grant.contract_id, grant.contract_version)
            found = effective_terms(consented or latest, latest)
            self._effective[key] = found
        return found

    def _subject(self, session: Session, vin: str) -> Subject:
        """What identifies the people of this vehicle: logins and contact values, to scrub
        (or to let through, where the contract releases their kind)."""
        labelled: set[tuple[IdentifierKind, str]] = set()
        for customer_id, login in party_store.holders(session, vin):
            labelled.add((IdentifierKind.LOGIN, login))
            contact = load_contact(session, self.vault, customer_id) or {}
            labelled.update(
                (CONTACT_KINDS[k], str(v)) for k, v in contact.items() if k in CONTACT_KINDS and v
            )
        return Subject(vin=vin, labelled=frozenset(labelled))

    def _identifier_index(self, session: Session) -> IdentifierIndex:
        """Every customer's identifiers (keyed hashes), re-read only when the index changed."""
        version = identifier_index.version(session)
        with self._index_lock:
            cached = self._index
        if cached is not None and cached[0] == version:
            return cached[1]
        entries = identifier_index.entries(session)
        index = IdentifierIndex(
            hasher=self.vault.identifier_hasher,
            digests=frozenset(e.digest for e in entries),
            max_words=max((e.words for e in entries), default=0),
        )
        with self._index_lock:
            self._index = (version, index)
        return index

    def _read(
        self, session: Session, request: ReleaseRequest, vehicles: dict[str, _Vehicle]
    ) -> tuple[list[SourceRecord], tuple[datetime, str] | None, list[Withheld]]:
        """The stored records the grants cover; records outside a grant's periods withheld."""
        wanted = frozenset().union(*(v.categories for v in vehicles.values()))
        stored = telemetry_read.records(
            session,
            self.vault,
            vins=list(vehicles),
            categories=sorted(wanted),
            since=request.since,
            until=request.until,
            after=request.after,
            limit=request.limit + 1 if request.limit is not None else None,
        )
        next_after = None
        if request.limit is not None and len(stored) > request.limit:
            stored = stored[: request.limit]  # one more was read only to know a next page exists
            next_after = (stored[-1].recorded_at, stored[-1].id)
        released: list[SourceRecord] = []
        outside: dict[tuple[str, str], int] = defaultdict(int)
        not_held: dict[tuple[str, str], int] = defaultdict(int)
        not_yet: dict[tuple[str, str], int] = defaultdict(int)
        for record in stored:
            vehicle = vehicles[record.vin]
            if record.category not in vehicle.categories:
                continue
            if not vehicle.grant.covers(record.recorded_at):
                outside[(record.vin, record.category)] += 1
                continue
            if not vehicle.giver_held(record.recorded_at):  # checked per record, not at consent
                not_held[(record.vin, record.category)] += 1
                continue
            # A category an amendment added covers only data recorded from the amendment on.
            if record.category not in vehicle.grant.terms_at(record.recorded_at).categories:
                not_yet[(record.vin, record.category)] += 1
                continue
            released.append(
                SourceRecord(
                    record.id, record.vin, record.category, record.recorded_at, record.data
                )
            )
        why = (
            ("recorded_outside_grant", "recorded while the grant was not active", outside),
            (
                "recorded_outside_giver_ownership",
                "recorded while the customer who gave the grant did not own the vehicle",
                not_held,
            ),
            (
                "recorded_before_category_granted",
                "recorded before the customer added this category to the grant",
                not_yet,
            ),
        )
        withheld = [
            Withheld(
                Reason(code, text, category=category, count=count),
                vehicle_reference(vin, vehicles[vin].context),
            )
            for code, text, counts in why
            for (vin, category), count in sorted(counts.items())
        ]
        return released, next_after, withheld

    def _protect(
        self,
        session: Session,
        records: list[SourceRecord],
        vehicles: dict[str, _Vehicle],
        contract: Contract,
    ) -> ProtectedPayload:
        subjects = {vin: v.subject for vin, v in vehicles.items()}
        if contract.protection.level is ProtectionLevel.ANONYMISED or not vehicles:
            context = ProtectionContext(
                contract=contract,
                recipient_id=contract.recipient,
                pseudonymiser=self.keyring.pseudonymiser(contract.recipient, contract.id),
                free_text=self.free_text,
            )
            return protect(records, self._with_index(session, records, context), subjects)
        parts = []
        for vin, vehicle in sorted(vehicles.items()):
            # Each record at the location precision the grant had when it was recorded
            # (a finer precision an amendment added covers only later data).
            by_precision: dict[str | None, list[SourceRecord]] = defaultdict(list)
            for record in records:
                if record.vin == vin:
                    terms = vehicle.grant.terms_at(record.recorded_at)
                    by_precision[terms.location_precision].append(record)
            for precision, mine in sorted(by_precision.items(), key=lambda p: str(p[0])):
                context = replace(vehicle.context, location_precision=precision)
                context = self._with_index(session, mine, context)
                parts.append(protect(mine, context, {vin: vehicle.subject}))
        return _merge(parts, contract.protection.level)

    def _with_index(
        self, session: Session, records: list[SourceRecord], context: ProtectionContext
    ) -> ProtectionContext:
        """``context`` with the identifier index, if protecting ``records`` scrubs text."""
        if not scrubs_text_of(records, context):
            return context
        return replace(context, index=self._identifier_index(session))

    # -- denial and audit -----------------------------------------------------------------

    def _subject_ref(self, request: ReleaseRequest, grants: list[Grant]) -> str:
        """Whose data the entry concerns: the population, a grant, or (no grant at all) the
        vehicle by its audit reference, so the holder's history can show it."""
        if isinstance(request.target, PopulationTarget):
            return "population"
        if grants:
            return sorted(g.id for g in grants)[0]
        return self.keyring.vehicle_ref(request.target.vin)

    def _deny(
        self,
        session: Session,
        request: ReleaseRequest,
        reasons: list[Reason],
        now: datetime,
        contract: Contract | None = None,
        transfer: TransferDecision | None = None,
        *,
        kind: str = "denial",
    ) -> Denial:
        entry = self._audit(
            session,
            request,
            now,
            contract,
            kind=kind,
            decision="denied",
            reasons=reasons,
            grants=_concerned(session, request),
            payload=None,
            transfer=transfer,
        )
        assert entry.seq is not None
        log.info(
            "release denied",
            extra={
                "recipient": request.recipient_id,
                "contract": request.contract_id,
                "channel": request.channel.value,
                "reasons": [r.code for r in reasons],
            },
        )
        return Denial(request=request, reasons=tuple(reasons), audit_seq=entry.seq)

    def _audit(
        self,
        session: Session,
        request: ReleaseRequest,
        now: datetime,
        contract: Contract | None,
        *,
        kind: str,
        decision: str,
        reasons: list[Reason],
        grants: list[Grant],
        payload: ProtectedPayload | None,
        transfer: TransferDecision | None,
    ) -> AuditEntry:
        countries, mechanisms = transfer.audit_fields() if transfer is not None else ((), ())
        released = (
            sorted({r["category"] for r in payload.records if "category" in r}) if payload else []
        )
        [entry] = audit_store.append(
            session,
            [
                AuditEntry(
                    at=now,
                    kind=kind,
                    recipient_id=request.recipient_id[:64],
                    contract_id=request.contract_id[:64],
                    contract_version=contract.version if contract else None,
                    grant_ids=tuple(sorted(g.id for g in grants)),
                    channel=request.channel.value,
                    purpose=request.purpose[:100],
                    categories=tuple(released or sorted(request.categories)),
                    fields=payload.fields if payload else (),
                    record_count=len(payload.records) if payload else 0,
                    protection=contract.protection.level.value if contract else "",
                    destination_countries=countries,
                    transfer_mechanisms=mechanisms,
                    legal_basis=contract.legal_basis.value if contract else "",
                    decision=decision,
                    reasons=tuple(r.text() for r in reasons),
                    payload_digest=payload.digest() if payload else "",
                    subject_ref=self._subject_ref(request, grants),
                    details=_recorded_span(payload),
                )
            ],
        )
        return entry


def _grant_start(grant: Grant) -> datetime:
    periods = grant.active_periods()
    return periods[0][0] if periods else grant.valid_from


def _coarsened(
    request: ReleaseRequest, contract: Contract, vehicles: dict[str, _Vehicle]
) -> tuple[ReleaseRequest, tuple[datetime, datetime]]:
    """The request as read, and the range as the recipient may see it.

    The range is widened to whole buckets of the coarsest time precision among
    the contract and the vehicles' effective terms (a bisection of ``since`` or
    ``until`` then learns nothing finer). A range the recipient did not choose (a
    webhook event's) is read exactly and only shown coarsened. A range that must
    lie within the grant is not widened to before the grant's start (a time the
    recipient knows already).
    """
    precisions = [contract.time_precision, *(v.terms.time_precision for v in vehicles.values())]
    known = [p for p in precisions if p is not None]
    precision = max(known, key=lambda p: p.nominal_seconds) if known else None
    shown = coarse_range(request.since, request.until, precision)
    if request.exact_range:
        return request, shown
    since, until = shown
    if request.within_grant and vehicles:
        start = max(_grant_start(v.grant) for v in vehicles.values())
        if since < start <= request.since:
            since = start
    return replace(request, since=since, until=until), (since, until)


def _before_grant(grant: Grant, since: datetime) -> list[Reason]:
    start = _grant_start(grant)
    if since >= start:
        return []
    return [
        Reason(
            "before_grant",
            f"the requested range starts before the grant was active ({format_instant(start)})",
        )
    ]


def _recorded_span(payload: ProtectedPayload | None) -> dict[str, Any]:
    """When the released records were recorded (first, last): whose data it was, for the
    customer's transfer history, follows from it (a vehicle changes hands)."""
    times = [
        parse_instant(r["recorded_at"])
        for r in (payload.records if payload else ())
        if isinstance(r.get("recorded_at"), str)
    ]
    if not times:
        return {}
    return {"recorded": {"from": format_instant(min(times)), "to": format_instant(max(times))}}


def _owned_by_giver(session: Session, grant: Grant) -> tuple[Period, ...] | None:
    """The periods the customer who gave ``grant`` owned its vehicle (a driver's own
    periods do not count: a driver cannot consent for the owner's or the vehicle's data);
    None for a vehicle-linked grant, which no customer gave."""
    if grant.customer_id is None:
        return None
    vehicle = party_store.vehicle(session, grant.vin)
    if vehicle is None:
        return ()
    return tuple(o.period for o in vehicle.owners if o.customer_id == grant.customer_id)


def _concerned(session: Session, request: ReleaseRequest) -> list[Grant]:
    """The grants a refused request concerns: the recipient's grants under the contract on
    the vehicle asked for (only the customer's own, for a customer-bound token)."""
    if not isinstance(request.target, VehicleTarget):
        return []
    return [
        g
        for g in grant_store.for_vehicle(session, request.target.vin)
        if g.recipient_id == request.recipient_id
        and g.contract_id == request.contract_id
        and (request.customer_id is None or g.customer_id == request.customer_id)
    ]


def _merge(parts: list[ProtectedPayload], level: ProtectionLevel) -> ProtectedPayload:
    records = sorted(
        (r for p in parts for r in p.records),
        key=lambda r: (str(r.get("recorded_at", "")), str(r.get("category", "")), str(r)),
    )
    return ProtectedPayload(
        level=level,
        records=tuple(records),
        fields=tuple(sorted({f for p in parts for f in p.fields})),
        suppressed_groups=sum(p.suppressed_groups for p in parts),
        trimmed_records=sum(p.trimmed_records for p in parts),
    )
