"""The protection step of the release gate: minimise, then protect at the contract's level.

Records reach this step already filtered by the gate (grant coverage, location
safeguards); it never decides rights again. Every record is first generalised
(positions snapped to a grid when the grant is coarse, the level or a
transform asks for it), then minimised to the contract's fields, then
transformed per field, then protected at the contract's level:

- *identified*: nothing more, but free text (below);
- *pseudonymised*: the vehicle seen only by its pseudonym, direct identifier
  fields pseudonymised, every string scrubbed (identifiers become pseudonyms),
  positions on a grid (the contract's coarse grid, or 1000 m), times floored
  to the contract's time precision (15 minutes unless it names one);
- *anonymised*: no identifiers at all; trips trimmed, positions on the
  anonymisation grid, times bucketed, and only k-anonymous aggregates released.

Free-text fields (marked ``x-free-text`` in the category schemas; every string
when the caller does not say which fields are free text) are scrubbed at every
level, of every customer's identifiers and of anything shaped like an e-mail
address, phone number, VIN or exact coordinate, except the kinds the contract
releases (:func:`released_kinds`). At the pseudonymised and anonymised levels
every string is scrubbed so.

The output is deterministic (sorted records, groups and keys), so the digest of
its canonical JSON identifies it in the audit log.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from broker.clock import ensure_utc, format_instant
from broker.domain.contracts import (
    Contract,
    LocationPrecision,
    ProtectionLevel,
    Transform,
    TransformOp,
    VehicleIdentifier,
)
from broker.protection.anonymise import Observation, TripPoint, aggregate, trim_trips
from broker.protection.geo import coordinate, snap, snap_latitude
from broker.protection.identifiers import IdentifierIndex, IdentifierKind
from broker.protection.keys import Pseudonymiser, normalise_vin
from broker.protection.minimise import minimise
from broker.protection.scrub import Scrubber
from broker.protection.transforms import (
    COORDINATE_FIELDS,
    DROPPED,
    apply_transform,
    coarse_instant,
    floor_instant,
)

#: The grid (metres) for positions when the contract names none.
DEFAULT_GRID_M: Final = 1000

#: Fields that name the data subject: pseudonymised, or dropped when anonymised.
DIRECT_IDENTIFIER_FIELDS: Final = frozenset(
    {
        "customer.account.account_id",
        "customer.contact.email",
        "customer.contact.house_number",
        "customer.contact.name",
        "customer.contact.phone",
        "customer.contact.street",
    }
)

#: Fields that link records of one vehicle: never part of an anonymised release.
LINKING_FIELDS: Final = frozenset({"trip_id"})

_LATITUDE, _LONGITUDE = COORDINATE_FIELDS


@dataclass(frozen=True)
class SourceRecord:
    """A stored telemetry record, as the gate read it."""

    record_id: str
    vin: str
    category: str
    recorded_at: datetime
    data: Mapping[str, Any]


@dataclass(frozen=True)
class Subject:
    """What identifies the data subject of one vehicle: its VIN and known identifiers."""

    vin: str
    identifiers: frozenset[str] = frozenset()
    #: Identifiers whose kind is known (a contract may release a kind); also scrubbed.
    labelled: frozenset[tuple[IdentifierKind, str]] = frozenset()

    @property
    def all_identifiers(self) -> frozenset[str]:
        return self.identifiers | {value for _, value in self.labelled}

    def of_kinds(self, kinds: frozenset[IdentifierKind]) -> frozenset[str]:
        """The labelled identifiers of ``kinds``."""
        return frozenset(value for kind, value in self.labelled if kind in kinds)


@dataclass(frozen=True)
class ProtectionContext:
    """Whom a release is for and under which terms.

    ``contract`` holds the effective terms the gate computed; ``pseudonymiser``
    must be the one of (``recipient_id``, contract id); ``location_precision`` is
    the grant's (``"precise"``, ``"coarse"`` or None). ``free_text``: the
    ``<category>.<field>`` targets that hold free text (the catalogue's); None
    treats every string as free text. ``index``: every customer's identifiers,
    hashed, for free text to be scrubbed of.
    """

    contract: Contract
    recipient_id: str
    pseudonymiser: Pseudonymiser
    location_precision: str | None = None
    free_text: frozenset[str] | None = None
    index: IdentifierIndex | None = None

    def __post_init__(self) -> None:
        if self.recipient_id != self.contract.recipient:
            raise ValueError("the protection context's recipient is not the contract's")
        owner = (self.pseudonymiser.recipient_id, self.pseudonymiser.contract_id)
        if owner[0] is not None and owner[0] != self.recipient_id:
            raise ValueError("the pseudonymiser belongs to another recipient")
        if owner[1] is not None and owner[1] != self.contract.id:
            raise ValueError("the pseudonymiser belongs to another contract")

    @property
    def level(self) -> ProtectionLevel:
        return self.contract.protection.level

    @property
    def coarse(self) -> bool:
        """Whether positions go out at coarse precision only.

        True when the grant says coarse, when the terms offer nothing more
        detailed, and when the grant names a precision this code does not know.
        """
        location = self.contract.location
        if location is not None and location.most_detailed is LocationPrecision.COARSE:
            return True
        return self.location_precision not in (None, LocationPrecision.PRECISE.value)


@dataclass(frozen=True)
class ProtectedPayload:
    """What a recipient may receive, and what the audit log digests.

    ``records``: for identified and pseudonymised data one dict per record
    (``id``, the recipient's own id of the record; ``vehicle`` when the recipient
    may see one, ``category``, ``recorded_at`` at the contract's time precision,
    ``data``); for anonymised data the aggregate groups. ``fields``: the
    ``<category>.<field>`` names actually released.
    """

    level: ProtectionLevel
    records: tuple[dict[str, Any], ...]
    fields: tuple[str, ...]
    suppressed_groups: int = 0
    trimmed_records: int = 0

    def document(self) -> dict[str, Any]:
        """The payload as a JSON-ready document."""
        return {
            "level": self.level.value,
            "records": list(self.records),
            "fields": list(self.fields),
            "suppressed_groups": self.suppressed_groups,
            "trimmed_records": self.trimmed_records,
        }

    def canonical_bytes(self) -> bytes:
        """Canonical JSON of :meth:`document`: sorted keys, no spaces, UTF-8."""
        return canonical_json(self.document())

    def digest(self) -> str:
        """Hex SHA-256 of :meth:`canonical_bytes`."""
        return hashlib.sha256(self.canonical_bytes()).hexdigest()


def canonical_json(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def vehicle_reference(vin: str, ctx: ProtectionContext) -> str | None:
    """The identifier the recipient may see for a vehicle: VIN, pseudonym, or None.

    The VIN only at the identified level; never anything at the anonymised level.
    """
    identifier = ctx.contract.vehicle_identifier
    if ctx.level is ProtectionLevel.ANONYMISED or identifier is VehicleIdentifier.NONE:
        return None
    if identifier is VehicleIdentifier.VIN and ctx.level is ProtectionLevel.IDENTIFIED:
        return normalise_vin(vin)
    return ctx.pseudonymiser.vehicle(vin)


def scrub_text(text: str, ctx: ProtectionContext, subjects: Iterable[Subject]) -> str:
    """``text`` (an error message, a link, a header) with no identifier the recipient may not see.

    VINs become the vehicle reference; other identifiers their pseudonym at the
    pseudonymised level, else a placeholder, whatever the level.
    """
    return _scrubber(ctx, list(subjects), ()).text(text)


def protect(
    records: Sequence[SourceRecord], ctx: ProtectionContext, subjects: Mapping[str, Subject]
) -> ProtectedPayload:
    """Minimise and protect ``records`` for the recipient of ``ctx``."""
    contract = ctx.contract
    ordered = sorted(
        (r for r in records if contract.terms_for(r.category) is not None),
        key=lambda r: (ensure_utc(r.recorded_at), r.category, r.vin, r.record_id),
    )
    scrubber = None
    if ctx.level is not ProtectionLevel.IDENTIFIED or scrubs_text_of(ordered, ctx):
        scrubber = _scrubber(ctx, list(subjects.values()), (r.vin for r in ordered))
    if ctx.level is ProtectionLevel.ANONYMISED:
        assert scrubber is not None
        return _anonymised(ordered, ctx, scrubber)
    return _per_record(ordered, ctx, scrubber)


#: The contact fields whose release lets that kind of identifier through free text.
_RELEASING_FIELDS: Final = {
    IdentifierKind.NAME: "customer.contact.name",
    IdentifierKind.ADDRESS: "customer.contact.street",
    IdentifierKind.EMAIL: "customer.contact.email",
    IdentifierKind.PHONE: "customer.contact.phone",
}


def released_kinds(ctx: ProtectionContext) -> frozenset[IdentifierKind]:
    """The kinds of identifier the contract lets through free text: only when identified.

    A contact field shared untransformed releases the data subjects' own
    identifiers of its kind (``street`` stands for the address); a VIN
    identifier, the released vehicles' own VINs; exact positions (shared
    latitude and longitude left exact under the grant), coordinates. Logins
    and other customers' identifiers are never released.
    """
    if ctx.level is not ProtectionLevel.IDENTIFIED:
        return frozenset()
    contract = ctx.contract
    kinds = {kind for kind, target in _RELEASING_FIELDS.items() if _shared_as_is(target, contract)}
    if contract.vehicle_identifier is VehicleIdentifier.VIN:
        kinds.add(IdentifierKind.VIN)
    for terms in contract.categories:
        targets = [f"{terms.category}.{name}" for name in COORDINATE_FIELDS]
        exact = all(_shared_as_is(target, contract) for target in targets)
        if exact and _grid_for(terms.category, ctx) is None:
            kinds.add(IdentifierKind.COORDINATE)
    return frozenset(kinds)


def _shared_as_is(target: str, contract: Contract) -> bool:
    category, _, name = target.rpartition(".")
    transform = contract.protection.transform_for(target)
    untransformed = transform is None or transform.op is TransformOp.KEEP
    return contract.allows(category, name) and untransformed


def _is_free_text(target: str, ctx: ProtectionContext) -> bool:
    return ctx.free_text is None or target in ctx.free_text


def scrubs_text_of(records: Sequence[SourceRecord], ctx: ProtectionContext) -> bool:
    """Whether protecting ``records`` under ``ctx`` scrubs any text it releases.

    The gate loads the identifier index only then: records without free text
    (at the identified level) or without any text at all never pay for it.
    """
    identified = ctx.level is ProtectionLevel.IDENTIFIED
    for record in records:
        terms = ctx.contract.terms_for(record.category)
        for name in terms.fields if terms is not None else ():
            if not isinstance(record.data.get(name), str | list):
                continue
            if not identified or _is_free_text(f"{record.category}.{name}", ctx):
                return True
    return False


def _scrubber(ctx: ProtectionContext, subjects: list[Subject], vins: Iterable[str]) -> Scrubber:
    pseudonymised = ctx.level is ProtectionLevel.PSEUDONYMISED
    kinds = released_kinds(ctx)
    vin_list = [*(s.vin for s in subjects), *vins]
    own_vins = {normalise_vin(v) for v in vin_list}

    def vehicle_ref(vin: str) -> str | None:
        reference = vehicle_reference(vin, ctx)
        if reference == normalise_vin(vin) and reference not in own_vins:
            return None  # a clear VIN only of a vehicle this release is about
        return reference

    return Scrubber(
        vins=vin_list,
        identifiers=[i for s in subjects for i in s.all_identifiers],
        vehicle_ref=vehicle_ref,
        identifier_ref=ctx.pseudonymiser.identifier if pseudonymised else None,
        released=[i for s in subjects for i in s.of_kinds(kinds)],
        release_coordinates=IdentifierKind.COORDINATE in kinds,
        index=ctx.index,
    )


# --- identified and pseudonymised: one protected record per record ---------------------------


def record_id(record_id: str, ctx: ProtectionContext) -> str:
    """The id a recipient sees for a stored record: stable for that recipient and contract
    (to de-duplicate), unrelated to the car maker's record id and to every other
    recipient's id for the same record, so it joins nothing."""
    return RECORD_ID_PREFIX + ctx.pseudonymiser.pseudonym("record", record_id)[4:]


#: Every released record's ``id`` starts with this.
RECORD_ID_PREFIX: Final = "rec_"


def _per_record(
    records: Sequence[SourceRecord], ctx: ProtectionContext, scrubber: Scrubber | None
) -> ProtectedPayload:
    """One entry per record. Its ``recorded_at`` is floored to the contract's time
    precision (15 minutes by default when pseudonymised: an exact time joins copies)."""
    released: list[tuple[tuple[datetime, str, str, bytes], dict[str, Any]]] = []
    precision = ctx.contract.time_precision
    for record in records:
        data = _protect_data(record, ctx, scrubber)
        if not data:
            continue
        recorded_at = coarse_instant(ensure_utc(record.recorded_at), precision)
        entry: dict[str, Any] = {
            "id": record_id(record.record_id, ctx),
            "category": record.category,
            "recorded_at": format_instant(recorded_at),
            "data": data,
        }
        reference = vehicle_reference(record.vin, ctx)
        if reference is not None:
            entry["vehicle"] = reference
        key = (
            recorded_at,
            record.category,
            reference or "",
            canonical_json(data) + entry["id"].encode(),
        )
        released.append((key, entry))
    released.sort(key=lambda item: item[0])
    fields = {f"{entry['category']}.{name}" for _, entry in released for name in entry["data"]}
    return ProtectedPayload(
        level=ctx.level, records=tuple(entry for _, entry in released), fields=tuple(sorted(fields))
    )


def _protect_data(
    record: SourceRecord, ctx: ProtectionContext, scrubber: Scrubber | None
) -> dict[str, Any]:
    """Generalise, minimise, transform and scrub the data of one record."""
    terms = ctx.contract.terms_for(record.category)
    assert terms is not None
    grid = _grid_for(record.category, ctx)
    data = minimise(_generalise(record.data, grid), terms.fields)
    protected: dict[str, Any] = {}
    identified = ctx.level is ProtectionLevel.IDENTIFIED
    for name, value in data.items():
        transform = _effective_transform(record.category, name, ctx.level, ctx.contract)
        scrubs = scrubber is not None and (
            not identified or _is_free_text(f"{record.category}.{name}", ctx)
        )
        if transform is None:
            protected[name] = scrubber.value(value) if scrubs and scrubber else value
            continue
        result = apply_transform(value, transform, ctx.pseudonymiser)
        if result is DROPPED:
            continue
        pseudonymised = transform.op is TransformOp.PSEUDONYMISE
        protected[name] = (
            scrubber.value(result) if scrubs and scrubber and not pseudonymised else result
        )
    return protected


def _effective_transform(
    category: str, name: str, level: ProtectionLevel, contract: Contract
) -> Transform | None:
    """The contract's transform of a field, made stronger where the level needs it."""
    target = f"{category}.{name}"
    transform = contract.protection.transform_for(target)
    op = transform.op if transform else TransformOp.KEEP
    if op is TransformOp.GENERALISE and name in COORDINATE_FIELDS:
        return None  # already applied, to the point as a whole, by _generalise
    if level is ProtectionLevel.ANONYMISED and (
        target in DIRECT_IDENTIFIER_FIELDS
        or name in LINKING_FIELDS
        or op is TransformOp.PSEUDONYMISE
    ):
        return Transform(target, TransformOp.DROP)
    pseudonymised = level is ProtectionLevel.PSEUDONYMISED
    if pseudonymised and target in DIRECT_IDENTIFIER_FIELDS and op is not TransformOp.DROP:
        return Transform(target, TransformOp.PSEUDONYMISE)
    return transform


def _grid_for(category: str, ctx: ProtectionContext) -> float | None:
    """The grid (metres) positions of ``category`` are snapped to; None keeps them exact."""
    contract = ctx.contract
    grids: list[float] = []
    if ctx.coarse:
        coarse = contract.location.coarse_grid_m if contract.location else None
        grids.append(coarse or DEFAULT_GRID_M)
    transforms = [
        contract.protection.transform_for(f"{category}.{name}") for name in COORDINATE_FIELDS
    ]
    generalised = [
        t.grid_m or DEFAULT_GRID_M for t in transforms if t and t.op is TransformOp.GENERALISE
    ]
    grids.extend(generalised)
    if ctx.level is ProtectionLevel.PSEUDONYMISED and not generalised:
        grids.append(_default_grid(contract))
    anonymisation = contract.protection.anonymisation
    if ctx.level is ProtectionLevel.ANONYMISED:
        grids.append(anonymisation.grid_m if anonymisation else DEFAULT_GRID_M)
    return max(grids) if grids else None


def _default_grid(contract: Contract) -> float:
    if contract.location is not None and contract.location.coarse_grid_m:
        return contract.location.coarse_grid_m
    anonymisation = contract.protection.anonymisation
    return anonymisation.grid_m if anonymisation else DEFAULT_GRID_M


def _generalise(data: Mapping[str, Any], grid: float | None) -> dict[str, Any]:
    """``data`` with its position snapped to ``grid``; a coordinate that cannot be, dropped."""
    out = dict(data)
    if grid is None:
        return out
    latitude = coordinate(out.pop(_LATITUDE, None), 90)
    longitude = coordinate(out.pop(_LONGITUDE, None), 180)
    if latitude is not None and longitude is not None:
        out[_LATITUDE], out[_LONGITUDE] = snap(latitude, longitude, grid)
    elif latitude is not None:
        out[_LATITUDE] = snap_latitude(latitude, grid)
    # A longitude without a latitude has no row to be snapped in: dropped.
    return out


# --- anonymised: trimmed trips, bucketed times, k-anonymous groups -----------------------------


def _anonymised(
    records: Sequence[SourceRecord], ctx: ProtectionContext, scrubber: Scrubber
) -> ProtectedPayload:
    anonymisation = ctx.contract.protection.anonymisation
    if anonymisation is None:
        raise ValueError("an anonymised contract has anonymisation parameters")
    points = []
    for index, record in enumerate(records):
        latitude = coordinate(record.data.get(_LATITUDE), 90)
        longitude = coordinate(record.data.get(_LONGITUDE), 180)
        if latitude is not None and longitude is not None:
            trip = record.data.get("trip_id")
            points.append(
                TripPoint(
                    key=index,
                    vehicle=normalise_vin(record.vin),
                    trip_id=_trip_id(trip),
                    recorded_at=ensure_utc(record.recorded_at),
                    latitude=latitude,
                    longitude=longitude,
                )
            )
    trimmed = trim_trips(points, anonymisation.trip_trim_m)
    period = ctx.contract.time_precision or anonymisation.time_bucket  # never finer
    observations = []
    for index, record in enumerate(records):
        if index in trimmed:
            continue
        data = _protect_data(record, ctx, scrubber)
        if not data:
            continue
        cell: list[tuple[str, float]] = [
            (name, data.pop(name)) for name in COORDINATE_FIELDS if name in data
        ]
        if cell:
            cell.append(("grid_m", _grid_for(record.category, ctx) or DEFAULT_GRID_M))
        observations.append(
            Observation(
                category=record.category,
                vehicle=normalise_vin(record.vin),
                period_start=floor_instant(record.recorded_at, period),
                cell=tuple(cell),
                data=data,
            )
        )
    aggregation = aggregate(observations, k=anonymisation.k, period=period)
    fields: set[str] = set()
    for group in aggregation.groups:
        category = group["category"]
        names = [n for n in group.get("cell", {}) if n in COORDINATE_FIELDS]
        names += [*group["numbers"], *group["values"]]
        fields.update(f"{category}.{name}" for name in names)
    return ProtectedPayload(
        level=ProtectionLevel.ANONYMISED,
        records=aggregation.groups,
        fields=tuple(sorted(fields)),
        suppressed_groups=aggregation.suppressed,
        trimmed_records=len(trimmed),
    )


def _trip_id(value: Any) -> str | None:
    """The trip a position belongs to; None when the record names none."""
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        return None
    return str(value)
