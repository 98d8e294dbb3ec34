"""One audit entry, and its canonical bytes: the leaf of the audit Merkle tree.

The canonical form is JSON with sorted keys, no insignificant whitespace, UTF-8
(not ASCII-escaped), integers only (no floats: their text is not stable across
JSON libraries and PostgreSQL ``jsonb``) and instants as RFC 3339 UTC with a
``Z``. It covers **every** field, ``seq`` included, plus a format version
``"v": 1``: a leaf therefore commits to its position, so an entry moved to
another ``seq`` (or two entries swapped) is detected even in the part of the
log no signed checkpoint covers yet. The leaf hash is the RFC 9162 leaf hash,
``SHA-256(0x00 || canonical_bytes)``.

No personal data in clear: the subject of an entry is named by ``subject_ref``,
an opaque reference (a pseudonym, a grant id), never a VIN or a name. Keeping
VINs, names and positions out of every field is the caller's duty; a
``subject_ref`` shaped like a VIN is refused as a last line of defence.

https://www.rfc-editor.org/rfc/rfc9162#section-2.1.1
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from broker.clock import ensure_utc, format_instant, parse_instant

#: The version of the canonical form; part of every leaf.
FORMAT_VERSION = 1

#: The decisions an entry records.
DECISIONS = frozenset({"released", "partial", "denied", "recorded"})

#: Upper bound on the canonical size of ``details``: it is for a few small facts.
MAX_DETAILS_BYTES = 4096

_TUPLE_FIELDS = (
    "grant_ids",
    "categories",
    "fields",
    "destination_countries",
    "transfer_mechanisms",
    "reasons",
)
_STRING_FIELDS = (
    "kind",
    "recipient_id",
    "contract_id",
    "channel",
    "purpose",
    "protection",
    "legal_basis",
    "decision",
    "payload_digest",
    "subject_ref",
)
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# ISO 3779: 17 characters, digits and capital letters other than I, O and Q.
_VIN_SHAPED = re.compile(r"[A-HJ-NPR-Z0-9]{17}", re.IGNORECASE)


def canonical_json(value: Any) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8; NaN and infinities refused."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def digest_payload(payload: bytes) -> str:
    """The hex SHA-256 of a released payload, for :attr:`AuditEntry.payload_digest`."""
    return hashlib.sha256(payload).hexdigest()


@dataclass(frozen=True, kw_only=True)
class AuditEntry:
    """What happened, to whom it was released, under which contract and why.

    ``seq`` is ``None`` until :func:`broker.store.audit.append` gives the entry
    its place in the log.
    """

    at: datetime
    kind: str
    seq: int | None = None
    recipient_id: str = ""
    contract_id: str = ""
    contract_version: int | None = None
    grant_ids: tuple[str, ...] = ()
    channel: str = ""
    purpose: str = ""
    categories: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    record_count: int = 0
    protection: str = ""
    destination_countries: tuple[str, ...] = ()
    transfer_mechanisms: tuple[str, ...] = ()
    legal_basis: str = ""
    decision: str = "recorded"
    reasons: tuple[str, ...] = ()
    payload_digest: str = ""
    subject_ref: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "at", ensure_utc(self.at))
        for name in _TUPLE_FIELDS:
            set_(self, name, _strings(name, getattr(self, name)))
        for name in _STRING_FIELDS:
            _check_string(name, getattr(self, name))
        if not self.kind:
            raise ValueError("an audit entry needs a kind")
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {sorted(DECISIONS)}, not {self.decision!r}")
        if self.seq is not None and not _is_int(self.seq, minimum=0):
            raise ValueError("seq is a non-negative integer")
        if self.contract_version is not None and not _is_int(self.contract_version, minimum=0):
            raise ValueError("contract_version is a non-negative integer")
        if not _is_int(self.record_count, minimum=0):
            raise ValueError("record_count is a non-negative integer")
        if self.payload_digest and not _SHA256_HEX.fullmatch(self.payload_digest):
            raise ValueError("payload_digest is a lower-case hex SHA-256, or empty")
        if _VIN_SHAPED.fullmatch(self.subject_ref):
            raise ValueError("subject_ref looks like a VIN: use an opaque reference")
        if not isinstance(self.details, Mapping):
            raise ValueError("details is a JSON object")
        details = _plain_json(dict(self.details), "details")
        if len(canonical_json(details)) > MAX_DETAILS_BYTES:
            raise ValueError(f"details exceed {MAX_DETAILS_BYTES} bytes of canonical JSON")
        set_(self, "details", details)

    def with_seq(self, seq: int) -> AuditEntry:
        """This entry, placed at ``seq``."""
        return dataclasses.replace(self, seq=seq)

    def to_json(self) -> dict[str, Any]:
        """The canonical form as a JSON object (what the log stores)."""
        return {
            "v": FORMAT_VERSION,
            "seq": self.seq,
            "at": format_instant(self.at),
            "kind": self.kind,
            "recipient_id": self.recipient_id,
            "contract_id": self.contract_id,
            "contract_version": self.contract_version,
            "grant_ids": list(self.grant_ids),
            "channel": self.channel,
            "purpose": self.purpose,
            "categories": list(self.categories),
            "fields": list(self.fields),
            "record_count": self.record_count,
            "protection": self.protection,
            "destination_countries": list(self.destination_countries),
            "transfer_mechanisms": list(self.transfer_mechanisms),
            "legal_basis": self.legal_basis,
            "decision": self.decision,
            "reasons": list(self.reasons),
            "payload_digest": self.payload_digest,
            "subject_ref": self.subject_ref,
            "details": _plain_json(self.details, "details"),
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> AuditEntry:
        """Read back :meth:`to_json`; any missing, extra or mistyped key is refused."""
        if not isinstance(document, Mapping):
            raise ValueError("an audit entry is a JSON object")
        expected = set(_JSON_KEYS)
        present = set(document)
        if present != expected:
            missing = sorted(expected - present)
            extra = sorted(str(k) for k in present - expected)
            raise ValueError(f"audit entry keys differ: missing {missing}, unexpected {extra}")
        if document["v"] != FORMAT_VERSION or isinstance(document["v"], bool):
            raise ValueError(f"unknown audit entry format {document['v']!r}")
        at = document["at"]
        if not isinstance(at, str):
            raise ValueError("at is an RFC 3339 string")
        values = {k: document[k] for k in _JSON_KEYS if k not in {"v", "at"}}
        for name in _TUPLE_FIELDS:
            if not isinstance(values[name], list):
                raise ValueError(f"{name} is a JSON array")
        return cls(at=parse_instant(at), **values)

    def canonical_bytes(self) -> bytes:
        """The canonical JSON of every field, ``seq`` included."""
        return canonical_json(self.to_json())

    def leaf_hash(self) -> bytes:
        """The RFC 9162 leaf hash ``SHA-256(0x00 || canonical_bytes)``; needs a ``seq``."""
        if self.seq is None:
            raise ValueError("an entry has a leaf hash only once it has its place (seq)")
        return hashlib.sha256(b"\x00" + self.canonical_bytes()).digest()


_JSON_KEYS = ("v", "at", *(f.name for f in dataclasses.fields(AuditEntry) if f.name != "at"))


def _is_int(value: object, *, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_string(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{name} is a string")
    if "\x00" in value:
        raise ValueError(f"{name} contains a NUL character")


def _strings(name: str, values: Iterable[str]) -> tuple[str, ...]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ValueError(f"{name} is a sequence of strings")
    result = tuple(values)
    for value in result:
        _check_string(name, value)
    return result


def _plain_json(value: Any, where: str) -> Any:
    """A fresh copy of ``value`` made of dicts, lists, strings, integers, booleans and null."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        _check_string(where, value)
        return value
    if isinstance(value, float):
        raise ValueError(f"{where}: floats are not allowed in an audit entry (use integers)")
    if isinstance(value, Mapping):
        copy: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: object keys are strings")
            _check_string(where, key)
            copy[key] = _plain_json(item, f"{where}.{key}")
        return copy
    if isinstance(value, list | tuple):
        return [_plain_json(item, f"{where}[]") for item in value]
    raise ValueError(f"{where}: {type(value).__name__} is not JSON")
