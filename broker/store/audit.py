"""Audit log storage: appends inside the caller's transaction, checkpoints, verification.

:func:`append` gives entries consecutive seqs in the caller's transaction (so a
release and its audit entry commit together, or neither does), serialised
across processes: on PostgreSQL by a transaction-scoped advisory lock taken
before the last seq is read; on SQLite by the single writer thread and
``BEGIN IMMEDIATE`` of write sessions. A batch is one call (group commit).
The last seq is read after the lock is held, which on PostgreSQL needs the
default READ COMMITTED isolation (a REPEATABLE READ transaction that read
before appending would see a stale last seq and fail on the primary key).

:func:`verify` reads the whole log and decides with
:func:`broker.audit.log.verify_entries`; :func:`write_checkpoint` signs the
current tree, after checking that nothing it is about to sign was changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from broker.audit.checkpoint import Checkpoint, CheckpointSigner, CheckpointVerifier
from broker.audit.entry import AuditEntry
from broker.audit.log import (
    AuditLogInvalid,
    CheckpointClaim,
    StoredEntry,
    VerifyResult,
    verify_entries,
)
from broker.clock import ensure_utc
from broker.store.tables import AuditCheckpointRow, AuditEntryRow

#: The PostgreSQL advisory lock that serialises audit appends ("vdbaudit" as a bigint).
AUDIT_LOCK_KEY = 0x7664_6261_7564_6974

#: Entry fields copied into columns for queries, and their column widths.
_COLUMN_LIMITS = {"kind": 32, "recipient_id": 64, "subject_ref": 128}
_READ_BATCH = 1000


def serialise(session: Session) -> None:
    """Hold the audit append lock until the transaction ends (PostgreSQL).

    On SQLite the write session already holds the database's one write lock.
    Every transaction that will append takes this lock *before* any row lock
    (grants), so lock order is the same everywhere and no two writers deadlock.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.connection().execute(
            sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK_KEY}
        )


def append(session: Session, entries: Sequence[AuditEntry]) -> list[AuditEntry]:
    """Append ``entries`` in order; returns them with their seqs. Commits with the caller."""
    if not entries:
        return []
    for entry in entries:
        if entry.seq is not None:
            raise ValueError(f"entry already has seq {entry.seq}: it was appended before")
        for name, limit in _COLUMN_LIMITS.items():
            if len(getattr(entry, name)) > limit:
                raise ValueError(f"an audit entry's {name} is at most {limit} characters")
    serialise(session)
    last = session.exec(select(sa.func.max(AuditEntryRow.seq))).one()
    start = 0 if last is None else int(last) + 1
    placed = [entry.with_seq(start + offset) for offset, entry in enumerate(entries)]
    session.exec(
        sa.insert(AuditEntryRow),
        params=[
            {
                "seq": entry.seq,
                "at": entry.at,
                "kind": entry.kind,
                "recipient_id": entry.recipient_id,
                "subject_ref": entry.subject_ref,
                "entry": entry.to_json(),
                "leaf_hash": entry.leaf_hash().hex(),
            }
            for entry in placed
        ],
    )
    return placed


def size(session: Session) -> int:
    """The number of entries in the log."""
    return int(session.exec(select(sa.func.count()).select_from(AuditEntryRow)).one())


def read(session: Session, *, start: int = 0, limit: int = 100) -> list[AuditEntry]:
    """Entries from ``start`` on, in order (as stored: :func:`verify` says if they are intact)."""
    rows = session.exec(
        select(AuditEntryRow.entry)
        .where(col(AuditEntryRow.seq) >= start)
        .order_by(col(AuditEntryRow.seq))
        .limit(limit)
    ).all()
    return [AuditEntry.from_json(row) for row in rows]


def stored_checkpoints(session: Session) -> list[Checkpoint]:
    """The stored checkpoints, oldest first, read but not verified."""
    rows = session.exec(select(AuditCheckpointRow).order_by(col(AuditCheckpointRow.id))).all()
    return [Checkpoint.parse(row.note) for row in rows]


def verify(
    session: Session,
    verifier: CheckpointVerifier | None,
    checkpoints: Iterable[str | Checkpoint] = (),
) -> VerifyResult:
    """Verify every entry and every stored checkpoint, plus ``checkpoints`` kept elsewhere
    (notes published or handed to a witness: they still count if the checkpoint table is
    emptied). Without ``verifier`` checkpoint signatures are not checked."""
    given = [
        CheckpointClaim(
            note=c if isinstance(c, str) else c.note(), label=f"given checkpoint {number}"
        )
        for number, c in enumerate(checkpoints, start=1)
    ]
    return verify_entries(_rows(session), [*_stored_claims(session), *given], verifier)


def write_checkpoint(session: Session, signer: CheckpointSigner, at: datetime) -> Checkpoint:
    """Sign and store a checkpoint of the whole log as it stands in this transaction.

    Refuses (:class:`~broker.audit.log.AuditLogInvalid`) to sign a log that does not
    match its earlier checkpoints, or whose entries since the last one were changed:
    a checkpoint must never launder an edit.
    """
    at = ensure_utc(at)
    serialise(session)
    result = verify_entries(
        _rows(session),
        _stored_claims(session),
        signer.verifier(),
        trust_checkpointed_leaves=True,
    )
    if not result.ok or result.root_hash is None:
        raise AuditLogInvalid(
            f"refusing to sign a checkpoint: {result.problem}", first_bad_seq=result.first_bad_seq
        )
    checkpoint = signer.sign(result.size, bytes.fromhex(result.root_hash), at)
    session.add(
        AuditCheckpointRow(
            tree_size=checkpoint.size,
            root_hash=checkpoint.root_hex,
            note=checkpoint.note(),
            created_at=at,
        )
    )
    session.flush()
    return checkpoint


def _stored_claims(session: Session) -> list[CheckpointClaim]:
    rows = session.exec(select(AuditCheckpointRow).order_by(col(AuditCheckpointRow.id))).all()
    return [
        CheckpointClaim(
            note=row.note,
            label=f"stored checkpoint #{row.id}",
            size=row.tree_size,
            root_hex=row.root_hash,
        )
        for row in rows
    ]


def _rows(session: Session) -> Iterator[StoredEntry]:
    result = session.connection().execute(
        sa.select(
            col(AuditEntryRow.seq),
            col(AuditEntryRow.entry),
            col(AuditEntryRow.leaf_hash),
            col(AuditEntryRow.at),
            col(AuditEntryRow.kind),
            col(AuditEntryRow.recipient_id),
            col(AuditEntryRow.subject_ref),
        )
        .order_by(col(AuditEntryRow.seq))
        .execution_options(yield_per=_READ_BATCH)
    )
    for seq, entry, leaf_hash, at, kind, recipient_id, subject_ref in result:
        yield StoredEntry(
            seq=seq,
            entry=entry,
            leaf_hash=leaf_hash,
            columns={
                "at": at,
                "kind": kind,
                "recipient_id": recipient_id,
                "subject_ref": subject_ref,
            },
        )
