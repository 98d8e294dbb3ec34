"""Data-sharing contracts as values: their terms, amendments and effective terms.

A contract document (``contracts/schemas/contract.schema.json``) is validated by
``broker.documents``; this module only reads a document that is already valid.

The amendment rule: a new version that *narrows* the terms applies to existing
grants at once; one that *widens* them needs new consent. So a release is always
decided under ``effective_terms(grant's version, latest version)``, which never
allows more than either version.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from fractions import Fraction
from typing import Any

from broker.clock import format_instant, parse_instant
from broker.domain.legal import Activation, LegalBasis

_DURATION = re.compile(
    r"P(?:(?P<weeks>\d+)W|(?=\d|T\d)(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)S)?)?)"
)
_DAY = 86_400
_YEAR_DAYS = Fraction(3_652_425, 10_000)  # mean Gregorian year


@dataclass(frozen=True)
class IsoDuration:
    """An ISO 8601 duration such as ``P28D`` or ``PT15M`` (whole units, no fractions).

    Years and months have no fixed length; comparisons use their mean Gregorian
    length (:attr:`nominal_seconds`), which is good enough to order terms.
    """

    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0
    hours: int = 0
    minutes: int = 0
    seconds: int = 0

    @classmethod
    def parse(cls, text: str) -> IsoDuration:
        match = _DURATION.fullmatch(text)
        if match is None:
            raise ValueError(f"not an ISO 8601 duration: {text!r}")
        parts = {name: int(value) for name, value in match.groupdict().items() if value}
        return cls(**parts)

    @property
    def nominal_seconds(self) -> Fraction:
        days = self.years * _YEAR_DAYS + self.months * _YEAR_DAYS / 12 + self.weeks * 7 + self.days
        return days * _DAY + self.hours * 3600 + self.minutes * 60 + self.seconds

    def __str__(self) -> str:
        if self.weeks and not (self.years or self.months or self.days or self.time_part):
            return f"P{self.weeks}W"
        days = self.days + 7 * self.weeks
        date = "".join(
            f"{n}{unit}" for n, unit in ((self.years, "Y"), (self.months, "M"), (days, "D")) if n
        )
        time = self.time_part
        if not date and not time:
            return "PT0S"
        return f"P{date}{'T' + time if time else ''}"

    @property
    def time_part(self) -> str:
        units = ((self.hours, "H"), (self.minutes, "M"), (self.seconds, "S"))
        return "".join(f"{n}{unit}" for n, unit in units if n)


class ProtectionLevel(StrEnum):
    """How far the data is separated from the person; later members protect more."""

    IDENTIFIED = "identified"
    PSEUDONYMISED = "pseudonymised"
    ANONYMISED = "anonymised"

    @property
    def strength(self) -> int:
        return _ORDER_LEVEL.index(self)


class Channel(StrEnum):
    PULL = "pull"
    WEBHOOK = "webhook"
    DATASPACE = "dataspace"
    EXPORT = "export"


class VehicleIdentifier(StrEnum):
    """How the recipient sees the vehicle; later members disclose more."""

    NONE = "none"
    PSEUDONYM = "pseudonym"
    VIN = "vin"

    @property
    def disclosure(self) -> int:
        return _ORDER_IDENTIFIER.index(self)


class LocationPrecision(StrEnum):
    """Precision of released positions; later members disclose more."""

    COARSE = "coarse"
    PRECISE = "precise"

    @property
    def detail(self) -> int:
        return _ORDER_PRECISION.index(self)


class TransformOp(StrEnum):
    KEEP = "keep"
    DROP = "drop"
    PSEUDONYMISE = "pseudonymise"
    ROUND = "round"
    BUCKET = "bucket"
    GENERALISE = "generalise"

    @property
    def strength(self) -> int:
        """keep < round, bucket, generalise < pseudonymise < drop."""
        return {TransformOp.KEEP: 0, TransformOp.PSEUDONYMISE: 2, TransformOp.DROP: 3}.get(self, 1)


_ORDER_LEVEL = tuple(ProtectionLevel)
_ORDER_IDENTIFIER = tuple(VehicleIdentifier)
_ORDER_PRECISION = tuple(LocationPrecision)


@dataclass(frozen=True)
class LocalizedText:
    en: str
    nl: str

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> LocalizedText:
        return cls(en=doc["en"], nl=doc["nl"])

    def to_document(self) -> dict[str, str]:
        return {"en": self.en, "nl": self.nl}


@dataclass(frozen=True)
class Purpose:
    code: str
    description: LocalizedText | None = None


@dataclass(frozen=True)
class CategoryTerms:
    """The fields of one data category a contract may share."""

    category: str
    fields: frozenset[str]
    optional: bool = False


@dataclass(frozen=True)
class Transform:
    """A protection step on one field, ``target`` being ``<category>.<field>``."""

    target: str
    op: TransformOp
    decimals: int | None = None
    size: int | float | IsoDuration | None = None
    grid_m: int | None = None

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"op": self.op.value}
        if self.decimals is not None:
            doc["decimals"] = self.decimals
        if self.size is not None:
            doc["size"] = str(self.size) if isinstance(self.size, IsoDuration) else self.size
        if self.grid_m is not None:
            doc["grid_m"] = self.grid_m
        return doc


@dataclass(frozen=True)
class Anonymisation:
    grid_m: int
    time_bucket: IsoDuration
    trip_trim_m: int
    k: int


#: The time precision of pseudonymised data when the contract names none.
DEFAULT_PSEUDONYMISED_TIME_PRECISION = IsoDuration(minutes=15)


@dataclass(frozen=True)
class Protection:
    level: ProtectionLevel
    transforms: tuple[Transform, ...] = ()
    anonymisation: Anonymisation | None = None
    #: What the contract names (``time_precision``); see :attr:`time_precision_in_effect`.
    time_precision: IsoDuration | None = None

    @property
    def time_precision_in_effect(self) -> IsoDuration | None:
        """How precisely times go out: record times, ranges and anything else a recipient
        sees are floored (a range's end ceiled) to it; None: exact.

        The contract's ``time_precision``; when it names none, 15 minutes when
        pseudonymised and exact when identified. Anonymised: at least the
        anonymisation's time bucket.
        """
        named = self.time_precision
        if self.level is ProtectionLevel.ANONYMISED and self.anonymisation is not None:
            bucket = self.anonymisation.time_bucket
            if named is None or named.nominal_seconds < bucket.nominal_seconds:
                return bucket
            return named
        if named is None and self.level is ProtectionLevel.PSEUDONYMISED:
            return DEFAULT_PSEUDONYMISED_TIME_PRECISION
        return named

    def transform_for(self, target: str) -> Transform | None:
        return next((t for t in self.transforms if t.target == target), None)


@dataclass(frozen=True)
class LocationTerms:
    precisions: frozenset[LocationPrecision]
    coarse_grid_m: int | None = None

    @property
    def most_detailed(self) -> LocationPrecision | None:
        return max(self.precisions, key=lambda p: p.detail, default=None)


@dataclass(frozen=True)
class RateLimit:
    requests: int
    per: IsoDuration

    @property
    def per_second(self) -> Fraction:
        return Fraction(self.requests) / max(self.per.nominal_seconds, Fraction(1))


@dataclass(frozen=True)
class Contract:
    """One version of a data-sharing contract."""

    id: str
    version: int
    title: LocalizedText
    recipient: str
    purpose: Purpose
    legal_basis: LegalBasis
    activation: Activation
    categories: tuple[CategoryTerms, ...]
    protection: Protection
    channels: frozenset[Channel]
    vehicle_identifier: VehicleIdentifier
    location: LocationTerms | None
    retention_at_recipient: IsoDuration
    rate_limit: RateLimit
    valid_from: datetime
    valid_until: datetime | None
    processing_countries: frozenset[str]
    sender_constraint: str | None = None  # "dpop": pull tokens must be DPoP-bound (RFC 9449)
    document: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Contract:
        """Build the value from a document that passed validation."""
        protection = doc["protection"]
        location = doc.get("location")
        anonymisation = protection.get("anonymisation")
        purpose = doc["purpose"]
        description = purpose.get("description")
        return cls(
            id=doc["id"],
            version=doc["version"],
            title=LocalizedText.from_document(doc["title"]),
            recipient=doc["recipient"],
            purpose=Purpose(
                code=purpose["code"],
                description=LocalizedText.from_document(description) if description else None,
            ),
            legal_basis=LegalBasis(doc["legal_basis"]),
            activation=Activation(doc["activation"]),
            categories=tuple(
                sorted(
                    (
                        CategoryTerms(cid, frozenset(terms["fields"]), bool(terms["optional"]))
                        for cid, terms in doc["categories"].items()
                    ),
                    key=lambda t: t.category,
                )
            ),
            protection=Protection(
                level=ProtectionLevel(protection["level"]),
                transforms=_sorted_transforms(
                    _transform_from_document(target, spec)
                    for target, spec in protection.get("transforms", {}).items()
                ),
                anonymisation=Anonymisation(
                    grid_m=anonymisation["grid_m"],
                    time_bucket=IsoDuration.parse(anonymisation["time_bucket"]),
                    trip_trim_m=anonymisation["trip_trim_m"],
                    k=anonymisation["k"],
                )
                if anonymisation
                else None,
                time_precision=_optional_duration(protection.get("time_precision")),
            ),
            channels=frozenset(Channel(c) for c in doc["channels"]),
            vehicle_identifier=VehicleIdentifier(doc["vehicle_identifier"]),
            location=LocationTerms(
                precisions=frozenset(LocationPrecision(p) for p in location["precisions"]),
                coarse_grid_m=location.get("coarse_grid_m"),
            )
            if location
            else None,
            retention_at_recipient=IsoDuration.parse(doc["retention_at_recipient"]),
            rate_limit=RateLimit(
                requests=doc["rate_limit"]["requests"],
                per=IsoDuration.parse(doc["rate_limit"]["per"]),
            ),
            valid_from=parse_instant(doc["validity"]["from"]),
            valid_until=_optional_instant(doc["validity"].get("until")),
            processing_countries=frozenset(doc["processing_countries"]),
            sender_constraint=doc.get("sender_constraint"),
            document=dict(doc),
        )

    def to_document(self) -> dict[str, Any]:
        """The contract as a document of the contract schema (sets sorted)."""
        purpose: dict[str, Any] = {"code": self.purpose.code}
        if self.purpose.description is not None:
            purpose["description"] = self.purpose.description.to_document()
        protection: dict[str, Any] = {"level": self.protection.level.value}
        if self.protection.transforms:
            protection["transforms"] = {
                t.target: t.to_document() for t in self.protection.transforms
            }
        if (anon := self.protection.anonymisation) is not None:
            protection["anonymisation"] = {
                "grid_m": anon.grid_m,
                "time_bucket": str(anon.time_bucket),
                "trip_trim_m": anon.trip_trim_m,
                "k": anon.k,
            }
        if self.protection.time_precision is not None:
            protection["time_precision"] = str(self.protection.time_precision)
        validity = {"from": format_instant(self.valid_from)}
        if self.valid_until is not None:
            validity["until"] = format_instant(self.valid_until)
        doc: dict[str, Any] = {
            "id": self.id,
            "version": self.version,
            "title": self.title.to_document(),
            "recipient": self.recipient,
            "purpose": purpose,
            "legal_basis": self.legal_basis.value,
            "activation": self.activation.value,
            "categories": {
                t.category: {"fields": sorted(t.fields), "optional": t.optional}
                for t in self.categories
            },
            "protection": protection,
            "channels": [c.value for c in Channel if c in self.channels],
            "vehicle_identifier": self.vehicle_identifier.value,
            "retention_at_recipient": str(self.retention_at_recipient),
            "rate_limit": {"requests": self.rate_limit.requests, "per": str(self.rate_limit.per)},
            "validity": validity,
            "processing_countries": sorted(self.processing_countries),
        }
        if self.location is not None:
            location: dict[str, Any] = {
                "precisions": [p.value for p in LocationPrecision if p in self.location.precisions]
            }
            if self.location.coarse_grid_m is not None:
                location["coarse_grid_m"] = self.location.coarse_grid_m
            doc["location"] = location
        if self.sender_constraint is not None:
            doc["sender_constraint"] = self.sender_constraint
        return doc

    @property
    def time_precision(self) -> IsoDuration | None:
        """How precisely times go out under this contract (None: exact)."""
        return self.protection.time_precision_in_effect

    @property
    def category_ids(self) -> frozenset[str]:
        return frozenset(t.category for t in self.categories)

    def terms_for(self, category: str) -> CategoryTerms | None:
        return next((t for t in self.categories if t.category == category), None)

    def allows(self, category: str, field_name: str) -> bool:
        terms = self.terms_for(category)
        return terms is not None and field_name in terms.fields

    def is_valid_at(self, when: datetime) -> bool:
        """Whether ``when`` lies in ``[valid_from, valid_until)``."""
        return self.valid_from <= when and (self.valid_until is None or when < self.valid_until)


def _optional_instant(text: str | None) -> datetime | None:
    return parse_instant(text) if text is not None else None


def _optional_duration(text: str | None) -> IsoDuration | None:
    return IsoDuration.parse(text) if text is not None else None


def _transform_from_document(target: str, spec: Mapping[str, Any]) -> Transform:
    size = spec.get("size")
    return Transform(
        target=target,
        op=TransformOp(spec["op"]),
        decimals=spec.get("decimals"),
        size=IsoDuration.parse(size) if isinstance(size, str) else size,
        grid_m=spec.get("grid_m"),
    )


def _sorted_transforms(transforms: Iterable[Transform]) -> tuple[Transform, ...]:
    return tuple(sorted(transforms, key=lambda t: t.target))


# --- amendments ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Amendment:
    """How a new version differs from an old one, as human-readable reasons.

    ``widens`` non-empty: existing grants keep the old terms until the customer
    consents again. ``narrows``: applies to existing grants at once.
    """

    widens: tuple[str, ...] = ()
    narrows: tuple[str, ...] = ()

    @property
    def needs_consent(self) -> bool:
        return bool(self.widens)

    @property
    def unchanged(self) -> bool:
        return not self.widens and not self.narrows


class _Reasons:
    def __init__(self) -> None:
        self.widens: list[str] = []
        self.narrows: list[str] = []

    def compare(self, old: Fraction | int, new: Fraction | int, wider: str, narrower: str) -> None:
        """Record ``wider`` if ``new > old`` and ``narrower`` if ``new < old``."""
        if new > old:
            self.widens.append(wider)
        elif new < old:
            self.narrows.append(narrower)

    def sets(self, label: str, old: Iterable[str], new: Iterable[str]) -> None:
        old_set, new_set = set(old), set(new)
        self.widens.extend(f"{label} added: {x}" for x in sorted(new_set - old_set))
        self.narrows.extend(f"{label} removed: {x}" for x in sorted(old_set - new_set))

    def both(self, reason: str) -> None:
        self.widens.append(reason)
        self.narrows.append(reason)


def classify_amendment(old: Contract, new: Contract) -> Amendment:
    """Say what ``new`` allows that ``old`` did not (widens), and the reverse (narrows)."""
    if old.id != new.id:
        raise ValueError("an amendment keeps the contract id")
    reasons = _Reasons()
    _compare_identity(reasons, old, new)
    _compare_categories(reasons, old, new)
    _compare_protection(reasons, old, new)
    reasons.sets("channel", (c.value for c in old.channels), (c.value for c in new.channels))
    reasons.compare(
        old.vehicle_identifier.disclosure,
        new.vehicle_identifier.disclosure,
        f"vehicle identifier reveals more: {old.vehicle_identifier} -> {new.vehicle_identifier}",
        f"vehicle identifier reveals less: {old.vehicle_identifier} -> {new.vehicle_identifier}",
    )
    _compare_location(reasons, old.location, new.location)
    reasons.compare(
        old.retention_at_recipient.nominal_seconds,
        new.retention_at_recipient.nominal_seconds,
        f"retention at recipient longer: {old.retention_at_recipient} -> "
        f"{new.retention_at_recipient}",
        f"retention at recipient shorter: {old.retention_at_recipient} -> "
        f"{new.retention_at_recipient}",
    )
    reasons.sets("processing country", old.processing_countries, new.processing_countries)
    _compare_validity(reasons, old, new)
    reasons.compare(
        old.rate_limit.per_second,
        new.rate_limit.per_second,
        "rate limit higher",
        "rate limit lower",
    )
    return Amendment(widens=tuple(reasons.widens), narrows=tuple(reasons.narrows))


def _compare_identity(reasons: _Reasons, old: Contract, new: Contract) -> None:
    """A change of recipient, purpose or legal ground is a new agreement: it needs consent."""
    if old.recipient != new.recipient:
        reasons.both("recipient changed")
    if old.purpose.code != new.purpose.code:
        reasons.both(f"purpose changed: {old.purpose.code} -> {new.purpose.code}")
    if old.legal_basis != new.legal_basis:
        reasons.both(f"legal basis changed: {old.legal_basis} -> {new.legal_basis}")
    if old.activation != new.activation:
        reasons.both(f"activation changed: {old.activation} -> {new.activation}")


def _compare_categories(reasons: _Reasons, old: Contract, new: Contract) -> None:
    reasons.sets("category", old.category_ids, new.category_ids)
    for category in sorted(old.category_ids & new.category_ids):
        old_terms, new_terms = old.terms_for(category), new.terms_for(category)
        assert old_terms is not None
        assert new_terms is not None
        reasons.sets(
            "field",
            (f"{category}.{f}" for f in old_terms.fields),
            (f"{category}.{f}" for f in new_terms.fields),
        )
        # A required category asks more of the customer than an optional one.
        if old_terms.optional and not new_terms.optional:
            reasons.widens.append(f"category now required: {category}")
        elif new_terms.optional and not old_terms.optional:
            reasons.narrows.append(f"category now optional: {category}")


def _compare_protection(reasons: _Reasons, old: Contract, new: Contract) -> None:
    old_p, new_p = old.protection, new.protection
    reasons.compare(
        -old_p.level.strength,
        -new_p.level.strength,
        f"protection weaker: {old_p.level} -> {new_p.level}",
        f"protection stronger: {old_p.level} -> {new_p.level}",
    )
    for target in sorted(_shared_fields(old, new)):
        wider, narrower = _compare_transform(
            old_p.transform_for(target), new_p.transform_for(target)
        )
        if wider:
            reasons.widens.append(f"transform weaker on {target}")
        if narrower:
            reasons.narrows.append(f"transform stronger on {target}")
    old_t, new_t = old_p.time_precision_in_effect, new_p.time_precision_in_effect
    reasons.compare(
        -(old_t.nominal_seconds if old_t else 0),
        -(new_t.nominal_seconds if new_t else 0),
        f"time precision finer: {old_t or 'exact'} -> {new_t or 'exact'}",
        f"time precision coarser: {old_t or 'exact'} -> {new_t or 'exact'}",
    )
    if old_p.anonymisation is not None and new_p.anonymisation is not None:
        a, b = old_p.anonymisation, new_p.anonymisation
        for name, old_value, new_value in (
            ("grid", a.grid_m, b.grid_m),
            ("time bucket", a.time_bucket.nominal_seconds, b.time_bucket.nominal_seconds),
            ("trip trim", a.trip_trim_m, b.trip_trim_m),
            ("k", a.k, b.k),
        ):
            reasons.compare(
                -old_value,
                -new_value,
                f"anonymisation {name} smaller",
                f"anonymisation {name} larger",
            )


def _shared_fields(old: Contract, new: Contract) -> set[str]:
    shared: set[str] = set()
    for category in old.category_ids & new.category_ids:
        old_terms, new_terms = old.terms_for(category), new.terms_for(category)
        assert old_terms is not None
        assert new_terms is not None
        shared.update(f"{category}.{f}" for f in old_terms.fields & new_terms.fields)
    return shared


def _compare_transform(old: Transform | None, new: Transform | None) -> tuple[bool, bool]:
    """(new reveals more than old, new reveals less than old); both when incomparable."""
    old_op = old.op if old else TransformOp.KEEP
    new_op = new.op if new else TransformOp.KEEP
    if old_op.strength != new_op.strength:
        return new_op.strength < old_op.strength, new_op.strength > old_op.strength
    if old_op != new_op:
        return True, True
    if old_op.strength != 1:
        return False, False
    assert old is not None  # round, bucket, generalise are never implicit
    assert new is not None
    strength = _param_strength(old, new)
    if strength is None:
        return True, True
    old_strength, new_strength = strength
    return new_strength < old_strength, new_strength > old_strength


def _param_strength(a: Transform, b: Transform) -> tuple[Fraction, Fraction] | None:
    """The protective parameter of two transforms with the same op, bigger protecting more."""
    if a.op is TransformOp.ROUND:
        return Fraction(-(a.decimals or 0)), Fraction(-(b.decimals or 0))
    if a.op is TransformOp.GENERALISE:
        return Fraction(a.grid_m or 0), Fraction(b.grid_m or 0)
    if isinstance(a.size, IsoDuration) and isinstance(b.size, IsoDuration):
        return a.size.nominal_seconds, b.size.nominal_seconds
    if isinstance(a.size, int | float) and isinstance(b.size, int | float):
        return Fraction(a.size), Fraction(b.size)
    return None


def _compare_location(
    reasons: _Reasons, old: LocationTerms | None, new: LocationTerms | None
) -> None:
    if old is None or new is None:
        return  # added or removed with the location category itself
    old_max, new_max = old.most_detailed, new.most_detailed
    if old_max is not None and new_max is not None:
        reasons.compare(
            old_max.detail,
            new_max.detail,
            "precise location newly allowed",
            "precise location no longer allowed",
        )
    coarse = LocationPrecision.COARSE
    had_coarse, has_coarse = coarse in old.precisions, coarse in new.precisions
    if old_max == new_max and had_coarse != has_coarse:
        if had_coarse:
            reasons.widens.append("coarse location no longer offered")
        else:
            reasons.narrows.append("coarse location newly offered")
    if had_coarse and has_coarse:
        reasons.compare(
            -(old.coarse_grid_m or 0),
            -(new.coarse_grid_m or 0),
            "coarse location grid finer",
            "coarse location grid coarser",
        )


def _compare_validity(reasons: _Reasons, old: Contract, new: Contract) -> None:
    if new.valid_from < old.valid_from:
        reasons.widens.append("validity starts earlier")
    elif new.valid_from > old.valid_from:
        reasons.narrows.append("validity starts later")
    if _later_end(new.valid_until, old.valid_until):
        reasons.widens.append("validity extended")
    elif _later_end(old.valid_until, new.valid_until):
        reasons.narrows.append("validity shortened")


def _later_end(a: datetime | None, b: datetime | None) -> bool:
    """Whether end ``a`` is later than end ``b`` (None: open-ended)."""
    if a is None:
        return b is not None
    return b is not None and a > b


# --- effective terms -------------------------------------------------------------------------


def effective_terms(consented: Contract, current: Contract) -> Contract:
    """The terms a grant given under ``consented`` has while ``current`` is in force.

    The intersection of both versions: what both allow, with the stronger
    protection. A change of recipient, purpose or legal ground leaves nothing
    shared until the customer consents again. The result's ``version`` is the
    current one; its ``document`` is the serialised intersection.
    """
    if consented.id != current.id:
        raise ValueError("effective terms need two versions of one contract")
    same_agreement = (
        consented.recipient == current.recipient
        and consented.purpose.code == current.purpose.code
        and consented.legal_basis == current.legal_basis
        and consented.activation == current.activation
    )
    categories = _intersect_categories(consented, current) if same_agreement else ()
    level = max(consented.protection.level, current.protection.level, key=lambda x: x.strength)
    fields = {f"{t.category}.{f}" for t in categories for f in t.fields}
    transforms = []
    for target in sorted(fields):
        combined = _stronger_transform(
            consented.protection.transform_for(target), current.protection.transform_for(target)
        )
        if combined is not None:
            transforms.append(combined)
    location = None
    if consented.location is not None and current.location is not None:
        location = _intersect_location(consented.location, current.location)
    effective = replace(
        consented,
        version=current.version,
        categories=categories,
        protection=Protection(
            level=level,
            transforms=tuple(transforms),
            anonymisation=_stronger_anonymisation(
                consented.protection.anonymisation, current.protection.anonymisation
            )
            if level is ProtectionLevel.ANONYMISED
            else None,
        ),
        channels=consented.channels & current.channels,
        vehicle_identifier=min(
            consented.vehicle_identifier, current.vehicle_identifier, key=lambda x: x.disclosure
        ),
        location=location if categories else None,
        retention_at_recipient=min(
            consented.retention_at_recipient,
            current.retention_at_recipient,
            key=lambda d: d.nominal_seconds,
        ),
        rate_limit=min(current.rate_limit, consented.rate_limit, key=lambda r: r.per_second),
        valid_from=max(consented.valid_from, current.valid_from),
        valid_until=_earlier_end(consented.valid_until, current.valid_until),
        processing_countries=consented.processing_countries & current.processing_countries,
        sender_constraint=consented.sender_constraint or current.sender_constraint,
    )
    precision = _coarser_precision(consented.time_precision, current.time_precision)
    if effective.protection.time_precision_in_effect != precision:  # else the default says it
        effective = replace(
            effective, protection=replace(effective.protection, time_precision=precision)
        )
    return replace(effective, document=effective.to_document())


def _intersect_categories(a: Contract, b: Contract) -> tuple[CategoryTerms, ...]:
    result = []
    for category in sorted(a.category_ids & b.category_ids):
        ta, tb = a.terms_for(category), b.terms_for(category)
        assert ta is not None
        assert tb is not None
        fields = ta.fields & tb.fields
        if fields:
            result.append(CategoryTerms(category, fields, ta.optional or tb.optional))
    return tuple(result)


def _stronger_transform(a: Transform | None, b: Transform | None) -> Transform | None:
    if a is None or b is None:
        return a or b
    if a.op.strength != b.op.strength:
        return a if a.op.strength > b.op.strength else b
    if a.op == b.op and a.op.strength != 1:
        return a
    strength = _param_strength(a, b) if a.op == b.op else None
    if strength is None:
        # Two different generalisations (or incomparable sizes): neither covers the other.
        return Transform(target=a.target, op=TransformOp.DROP)
    return a if strength[0] >= strength[1] else b


def _stronger_anonymisation(a: Anonymisation | None, b: Anonymisation | None) -> Anonymisation:
    if a is None or b is None:
        chosen = a or b
        if chosen is None:
            raise ValueError("an anonymised contract has anonymisation parameters")
        return chosen
    return Anonymisation(
        grid_m=max(a.grid_m, b.grid_m),
        time_bucket=max(a.time_bucket, b.time_bucket, key=lambda d: d.nominal_seconds),
        trip_trim_m=max(a.trip_trim_m, b.trip_trim_m),
        k=max(a.k, b.k),
    )


def _intersect_location(a: LocationTerms, b: LocationTerms) -> LocationTerms:
    """Precisions up to the less detailed of the two maxima; the coarser grid.

    A version offering only ``precise`` also allows releasing less, so the
    result is never empty when both sides allow some location.
    """
    a_max, b_max = a.most_detailed, b.most_detailed
    if a_max is None or b_max is None:
        return LocationTerms(frozenset())
    limit = min(a_max.detail, b_max.detail)
    precisions = frozenset(p for p in a.precisions | b.precisions if p.detail <= limit)
    grids = [g for g in (a.coarse_grid_m, b.coarse_grid_m) if g is not None]
    return LocationTerms(precisions, max(grids) if grids else None)


def _coarser_precision(a: IsoDuration | None, b: IsoDuration | None) -> IsoDuration | None:
    """The coarser of two time precisions (None is exact, the finest)."""
    if a is None or b is None:
        return a or b
    return max(a, b, key=lambda d: d.nominal_seconds)


def _earlier_end(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)
