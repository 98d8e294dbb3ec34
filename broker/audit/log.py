"""Verifying a stored audit log: every entry, its place, and the signed checkpoints.

The store (:mod:`broker.store.audit`) hands the rows in ``seq`` order; this
module, free of any database, decides. It checks, entry by entry:

1. the seqs are exactly ``0..n-1`` (a deleted row leaves a gap);
2. the stored JSON reads back as an :class:`~broker.audit.entry.AuditEntry` with no
   missing or extra key, and records the seq it is stored at (a leaf commits to
   its position, so moved, swapped and inserted rows show);
3. the columns the store copies out of the entry for queries agree with it;
4. the leaf hash recomputed from the JSON equals the stored one (an edited entry);

and, while it builds the RFC 9162 tree, that the tree of the first ``size``
entries has exactly the root of every checkpoint (signature checked first): a
log edited *and* rehashed end to end (every stored hash recomputed) passes 1-4
but not this, since the attacker cannot sign a new checkpoint; and a log cut
below a checkpoint's size is missing entries that checkpoint covers.

**What "first bad seq" means.** For 1-4 it is the exact entry. For a rehashed
log the root only says *some* entry of the checkpointed range changed: the
result names the first entry not covered by an earlier checkpoint that still
matches (entries before it are proven intact), and the message gives the range;
frequent checkpoints make that range short. The first problem in ``seq`` order
is the one reported.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.audit.checkpoint import Checkpoint, CheckpointVerifier, InvalidCheckpoint
from broker.audit.entry import AuditEntry
from broker.audit.merkle import EMPTY_ROOT, TreeBuilder
from broker.errors import BrokerError

_HEX_HASH = re.compile(r"[0-9a-f]{64}")


class AuditLogInvalid(BrokerError):
    """The audit log failed verification where it had to be intact (e.g. before signing)."""

    code = "audit_log_invalid"
    status = 500
    title = "Audit log failed verification"


@dataclass(frozen=True)
class StoredEntry:
    """One row of the log as storage holds it."""

    seq: int
    entry: Any  # the stored JSON object
    leaf_hash: str  # the stored leaf hash, hex
    columns: Mapping[str, Any] = field(default_factory=dict)  # copies of entry fields


@dataclass(frozen=True)
class CheckpointClaim:
    """A checkpoint note to check the log against, and where it came from."""

    note: str
    label: str
    size: int | None = None  # the size its storage row states, if any
    root_hex: str | None = None  # the root its storage row states, if any


@dataclass(frozen=True)
class VerifyResult:
    """The verdict on a log of ``size`` entries.

    ``checkpoint_size`` is the largest checkpoint the log was found to match (its
    first ``checkpoint_size`` entries are proven untouched), ``root_hash`` the
    hex root of all ``size`` entries when the log verified.
    """

    ok: bool
    size: int
    first_bad_seq: int | None = None
    problem: str | None = None
    checkpoint_size: int | None = None
    root_hash: str | None = None


class _Failure(Exception):
    def __init__(self, seq: int | None, problem: str) -> None:
        super().__init__(problem)
        self.seq = seq
        self.problem = problem


def verify_entries(
    rows: Iterable[StoredEntry],
    checkpoints: Iterable[CheckpointClaim | str] = (),
    verifier: CheckpointVerifier | None = None,
    *,
    trust_checkpointed_leaves: bool = False,
) -> VerifyResult:
    """Verify ``rows`` (in ``seq`` order) against ``checkpoints``.

    With ``verifier`` every checkpoint's signature is checked and one that fails
    makes the log fail; without it the notes are only read, so their roots still
    catch a careless edit but prove nothing against a careful one.

    ``trust_checkpointed_leaves`` skips re-reading the JSON of the entries the
    largest valid checkpoint covers: their *stored* leaf hashes are checked
    against its root instead. That is what a new checkpoint needs (it must not
    sign over a change, and a changed JSON under an intact leaf hash is still
    reported by a full verification), at a fraction of the cost.
    """
    good, checkpoint_problems = _read_checkpoints(checkpoints, verifier)
    unsigned = "" if verifier else " (signatures not checked: no public key given)"
    trusted_below = max(good, default=0) if trust_checkpointed_leaves else 0
    builder = TreeBuilder()
    proven: int | None = None
    failure: _Failure | None = None
    count = 0
    if 0 in good:
        if good[0][0] != EMPTY_ROOT:
            failure = _Failure(0, f"{good[0][1]} of size 0 has a root no empty log has")
        else:
            proven = 0
    for row in rows:
        count += 1
        if failure is not None:
            continue  # only counting from here
        try:
            builder.append(_check_row(row, count - 1, trusted=count - 1 < trusted_below))
            matching = good.get(builder.size)
            if matching is not None:
                root, label = matching
                if builder.root() != root:
                    start = proven or 0
                    raise _Failure(
                        start,
                        f"entries {start}..{builder.size - 1} do not match {label} of size "
                        f"{builder.size}{unsigned}: at least one of them was changed and the "
                        f"stored hashes recomputed to hide it"
                        + (f" (entries before {start} match)" if start else ""),
                    )
                proven = builder.size
        except _Failure as exc:
            failure = exc
    if failure is None:
        beyond = sorted(s for s in good if s > count)
        if beyond:
            label = good[beyond[0]][1]
            failure = _Failure(
                count,
                f"the log ends after {count} entries but {label} covers {beyond[0]}: "
                f"entries {count}..{beyond[0] - 1} were removed{unsigned}",
            )
    if failure is None and checkpoint_problems:
        failure = _Failure(None, checkpoint_problems[0])
    if failure is not None:
        return VerifyResult(
            ok=False,
            size=count,
            first_bad_seq=failure.seq,
            problem=failure.problem,
            checkpoint_size=proven,
        )
    return VerifyResult(ok=True, size=count, checkpoint_size=proven, root_hash=builder.root().hex())


def _read_checkpoints(
    claims: Iterable[CheckpointClaim | str], verifier: CheckpointVerifier | None
) -> tuple[dict[int, tuple[bytes, str]], list[str]]:
    """The checkpoints that read (and verify), by size, and the problems of the others."""
    good: dict[int, tuple[bytes, str]] = {}
    problems: list[str] = []
    for number, claim in enumerate(claims, start=1):
        if isinstance(claim, str):
            claim = CheckpointClaim(note=claim, label=f"given checkpoint {number}")
        try:
            checkpoint = verifier.verify(claim.note) if verifier else Checkpoint.parse(claim.note)
        except InvalidCheckpoint as exc:
            problems.append(f"{claim.label} is not valid: {exc.detail}")
            continue
        if claim.size is not None and claim.size != checkpoint.size:
            problems.append(
                f"{claim.label} is stored as size {claim.size}, its note says {checkpoint.size}"
            )
            continue
        if claim.root_hex is not None and claim.root_hex != checkpoint.root_hex:
            problems.append(f"{claim.label} is stored with a root its note does not have")
            continue
        earlier = good.get(checkpoint.size)
        if earlier is not None and earlier[0] != checkpoint.root:
            problems.append(
                f"{claim.label} and {earlier[1]} give different roots for size {checkpoint.size}"
            )
            continue
        good.setdefault(checkpoint.size, (checkpoint.root, claim.label))
    return good, problems


def _check_row(row: StoredEntry, expected: int, *, trusted: bool) -> bytes:
    """The row's leaf hash, if the row is the entry ``expected`` and intact."""
    if row.seq != expected:
        if row.seq > expected:
            raise _Failure(expected, f"entry {expected} is missing (the next one is {row.seq})")
        raise _Failure(expected, f"a row with seq {row.seq} stands where entry {expected} belongs")
    if not isinstance(row.leaf_hash, str) or not _HEX_HASH.fullmatch(row.leaf_hash):
        raise _Failure(expected, f"entry {expected} has a malformed leaf hash")
    stored = bytes.fromhex(row.leaf_hash)
    if trusted:
        return stored
    try:
        entry = AuditEntry.from_json(row.entry)
    except (ValueError, TypeError) as exc:
        raise _Failure(expected, f"entry {expected} cannot be read: {exc}") from None
    if entry.seq != expected:
        raise _Failure(
            expected,
            f"entry {expected} holds the entry recorded as seq {entry.seq}: "
            "entries were moved, inserted or deleted",
        )
    for name, value in row.columns.items():
        if getattr(entry, name) != value:
            raise _Failure(expected, f"entry {expected}'s {name} column disagrees with the entry")
    if entry.leaf_hash() != stored:
        raise _Failure(
            expected, f"entry {expected} was changed: it no longer matches its leaf hash"
        )
    return stored
