"""The audit log on SQLite and PostgreSQL: appends, checkpoints, and every kind of tampering.

Tampering is done the way an attacker with database access would: raw SQL on the
tables, bypassing the broker. Each kind must be detected and its first bad seq named.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from broker.audit import merkle
from broker.audit.checkpoint import Checkpoint, CheckpointSigner, CheckpointVerifier
from broker.audit.entry import AuditEntry, digest_payload
from broker.audit.log import AuditLogInvalid, VerifyResult
from broker.clock import ManualClock
from broker.store import audit
from broker.store.database import Database

VIN = "WVWZZZ1JZXW000001"
PSEUDONYM_KEY = b"test-pseudonym-key-kept-outside-the-log"


def subject_ref_for(vin: str) -> str:
    """An opaque reference for a vehicle: a keyed hash, useless without the key.

    This is how a caller names the subject of an entry without putting the VIN in it;
    erasing the customer's data (and the mapping) leaves the log verifiable.
    """
    return "psn-" + hmac.new(PSEUDONYM_KEY, vin.encode(), hashlib.sha256).hexdigest()[:32]


def make_entry(i: int, start: datetime, **overrides: Any) -> AuditEntry:
    values: dict[str, Any] = {
        "at": start + timedelta(seconds=i),
        "kind": "release",
        "recipient_id": "rcp-insurer-1",
        "contract_id": "ctr-payd",
        "contract_version": 2,
        "grant_ids": (f"grt-{i % 7}",),
        "channel": "pull",
        "purpose": "pay-as-you-drive pricing",
        "categories": ("odometer", "trip_summary"),
        "fields": ("odometer.km", "trip.distance_km"),
        "record_count": i % 5 + 1,
        "protection": "pseudonymised",
        "destination_countries": ("DE",),
        "transfer_mechanisms": ("eea",),
        "legal_basis": "6(1)(b)",
        "decision": "released",
        "reasons": ("grant active",),
        "payload_digest": digest_payload(f"payload {i}".encode()),
        "subject_ref": subject_ref_for(f"WVWZZZ1JZXW{i:06d}"),
        "details": {"attempt": 1, "batch": i // 10},
    }
    values.update(overrides)
    return AuditEntry(**values)


@pytest.fixture
def signer(tmp_path: Path) -> CheckpointSigner:
    return CheckpointSigner.generate(tmp_path / "audit-key.pem")


@pytest.fixture
def verifier(signer: CheckpointSigner) -> CheckpointVerifier:
    return signer.verifier()


def fill(db: Database, clock: ManualClock, count: int, *, batch: int = 10) -> None:
    for start in range(0, count, batch):
        entries = [make_entry(i, clock.now()) for i in range(start, min(count, start + batch))]
        db.run_sync(lambda s, e=entries: audit.append(s, e), write=True)  # type: ignore[misc]


def checkpoint(db: Database, signer: CheckpointSigner, clock: ManualClock) -> Checkpoint:
    return db.run_sync(lambda s: audit.write_checkpoint(s, signer, clock.now()), write=True)


def verify(db: Database, verifier: CheckpointVerifier | None, *notes: str) -> VerifyResult:
    return db.run_sync(lambda s: audit.verify(s, verifier, notes))


# --- raw SQL, as an attacker ---------------------------------------------------------------


def raw(db: Database, sql: str, **params: Any) -> list[Any]:
    with db.engine.begin() as conn:
        result = conn.execute(sa.text(sql), params)
        return list(result) if result.returns_rows else []


def raw_entry(db: Database, seq: int) -> dict[str, Any]:
    (row,) = raw(db, "SELECT entry FROM audit_entry WHERE seq = :seq", seq=seq)
    value = row[0]
    return json.loads(value) if isinstance(value, str) else dict(value)


def raw_set_entry(
    db: Database, seq: int, entry: dict[str, Any], *, rehash: bool = False, **columns: Any
) -> None:
    """Overwrite an entry's JSON (and with ``rehash`` its leaf hash, as a careful attacker)."""
    cast = "CAST(:entry AS jsonb)" if not db.is_sqlite else ":entry"
    sets = [f"entry = {cast}"]
    params: dict[str, Any] = {"seq": seq, "entry": json.dumps(entry)}
    if rehash:
        columns["leaf_hash"] = AuditEntry.from_json(entry).leaf_hash().hex()
    for name, value in columns.items():
        sets.append(f"{name} = :{name}")
        params[name] = value
    sql = f"UPDATE audit_entry SET {', '.join(sets)} WHERE seq = :seq"
    raw(db, sql, **params)


def raw_move(db: Database, old: int, new: int) -> None:
    raw(db, "UPDATE audit_entry SET seq = :new WHERE seq = :old", old=old, new=new)


def raw_insert(db: Database, entry: AuditEntry) -> None:
    cast = "CAST(:entry AS jsonb)" if not db.is_sqlite else ":entry"
    # SQLAlchemy keeps SQLite times as naive UTC text; PostgreSQL takes the aware value.
    at: Any = entry.at.strftime("%Y-%m-%d %H:%M:%S.%f") if db.is_sqlite else entry.at
    columns = "seq, at, kind, recipient_id, subject_ref, entry, leaf_hash"
    values = f":seq, :at, :kind, :recipient_id, :subject_ref, {cast}, :leaf_hash"
    sql = f"INSERT INTO audit_entry ({columns}) VALUES ({values})"
    raw(
        db,
        sql,
        seq=entry.seq,
        at=at,
        kind=entry.kind,
        recipient_id=entry.recipient_id,
        subject_ref=entry.subject_ref,
        entry=json.dumps(entry.to_json()),
        leaf_hash=entry.leaf_hash().hex(),
    )


def assert_bad(result: VerifyResult, seq: int | None, words: str) -> None:
    assert not result.ok, "tampering went unnoticed"
    assert result.first_bad_seq == seq, result.problem
    assert result.problem is not None
    assert words in result.problem, result.problem


# --- entries -------------------------------------------------------------------------------


def test_an_entry_has_canonical_bytes_and_an_rfc9162_leaf_hash(clock: ManualClock) -> None:
    entry = make_entry(3, clock.now()).with_seq(3)
    data = entry.canonical_bytes()
    assert data == json.dumps(
        json.loads(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    for part in (b'"at":"2026-03-02T08:00:03Z"', b'"seq":3', b'"v":1'):
        assert part in data
    assert entry.leaf_hash() == hashlib.sha256(b"\x00" + data).digest()
    assert AuditEntry.from_json(json.loads(data)) == entry
    # The seq is part of the leaf: the same entry elsewhere is another leaf.
    assert entry.with_seq(4).leaf_hash() != entry.leaf_hash()
    with pytest.raises(ValueError, match="seq"):
        make_entry(3, clock.now()).leaf_hash()


def test_an_entry_is_opaque_about_its_subject(clock: ManualClock) -> None:
    entry = make_entry(0, clock.now(), subject_ref=subject_ref_for(VIN)).with_seq(0)
    assert VIN.encode() not in entry.canonical_bytes()
    assert entry.subject_ref == subject_ref_for(VIN)  # stable: entries about one car group
    assert entry.subject_ref != subject_ref_for("WVWZZZ1JZXW000002")
    with pytest.raises(ValueError, match="looks like a VIN"):
        make_entry(0, clock.now(), subject_ref=VIN)
    with pytest.raises(ValueError, match="looks like a VIN"):
        make_entry(0, clock.now(), subject_ref=VIN.lower())


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("decision", "maybe", "decision must be one of"),
        ("kind", "", "needs a kind"),
        ("record_count", -1, "record_count"),
        ("record_count", True, "record_count"),
        ("payload_digest", "not-a-digest", "payload_digest"),
        ("details", {"score": 0.5}, "floats"),
        ("details", {"big": "x" * 5000}, "exceed"),
        ("reasons", "a string is not a tuple", "sequence of strings"),
        ("recipient_id", "nul\x00inside", "NUL"),
        ("at", datetime(2026, 3, 2, 8, 0), "naive"),  # noqa: DTZ001 - naive on purpose
    ],
)
def test_malformed_entries_are_refused(
    clock: ManualClock, field: str, value: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_entry(0, clock.now(), **{field: value})


def test_stored_json_with_an_extra_or_missing_key_does_not_read(clock: ManualClock) -> None:
    document = make_entry(0, clock.now()).with_seq(0).to_json()
    with pytest.raises(ValueError, match="unexpected"):
        AuditEntry.from_json({**document, "vin": VIN})
    del document["reasons"]
    with pytest.raises(ValueError, match="missing"):
        AuditEntry.from_json(document)


# --- appending -----------------------------------------------------------------------------


def test_an_empty_log_verifies(db: Database, verifier: CheckpointVerifier) -> None:
    result = verify(db, verifier)
    assert result == VerifyResult(ok=True, size=0, root_hash=hashlib.sha256(b"").hexdigest())


def test_a_batch_gets_consecutive_seqs_in_the_callers_transaction(
    db: Database, clock: ManualClock
) -> None:
    first = db.run_sync(
        lambda s: audit.append(s, [make_entry(i, clock.now()) for i in range(3)]), write=True
    )
    assert [e.seq for e in first] == [0, 1, 2]
    second = db.run_sync(lambda s: audit.append(s, [make_entry(3, clock.now())]), write=True)
    assert [e.seq for e in second] == [3]
    assert db.run_sync(lambda s: audit.append(s, [])) == []

    def release_that_fails(session: Session) -> None:
        audit.append(session, [make_entry(4, clock.now())])
        raise RuntimeError("the channel refused the payload")

    with pytest.raises(RuntimeError):
        db.run_sync(release_that_fails, write=True)
    # The entry went with the failed transaction: no gap, no phantom release.
    assert db.run_sync(audit.size) == 4
    stored = db.run_sync(lambda s: audit.read(s, start=2))
    assert [e.seq for e in stored] == [2, 3]
    assert stored[1] == second[0]
    with pytest.raises(ValueError, match="appended before"):
        db.run_sync(lambda s: audit.append(s, first), write=True)


async def test_concurrent_appends_are_gap_free(
    db: Database, clock: ManualClock, verifier: CheckpointVerifier
) -> None:
    tasks = 40

    async def append_three(task: int) -> list[AuditEntry]:
        batch = [make_entry(task * 3 + k, clock.now()) for k in range(3)]
        return await db.write(lambda s: audit.append(s, batch))

    results = await asyncio.gather(*(append_three(t) for t in range(tasks)))
    seqs = sorted(e.seq for batch in results for e in batch if e.seq is not None)
    assert seqs == list(range(tasks * 3))
    for batch in results:  # a batch is one block: nothing interleaves inside it
        assert [e.seq for e in batch] == list(range(batch[0].seq or 0, (batch[0].seq or 0) + 3))
    assert (await append_three(tasks))[0].seq == tasks * 3
    result = verify(db, verifier)
    assert result.ok, result.problem
    assert result.size == tasks * 3 + 3


def test_ten_thousand_entries_verify(
    db: Database, clock: ManualClock, signer: CheckpointSigner, verifier: CheckpointVerifier
) -> None:
    fill(db, clock, 6_000, batch=500)
    first = checkpoint(db, signer, clock)
    fill_from = 6_000
    for start in range(fill_from, 10_000, 500):
        entries = [make_entry(i, clock.now()) for i in range(start, start + 500)]
        db.run_sync(lambda s, e=entries: audit.append(s, e), write=True)  # type: ignore[misc]
    second = checkpoint(db, signer, clock)
    assert (first.size, second.size) == (6_000, 10_000)
    result = verify(db, verifier)
    assert result.ok, result.problem
    assert result.size == 10_000
    assert result.checkpoint_size == 10_000
    assert result.root_hash == second.root_hex
    assert [c.size for c in db.run_sync(audit.stored_checkpoints)] == [6_000, 10_000]


# --- tampering, one entry at a time --------------------------------------------------------


@pytest.fixture
def thirty(db: Database, clock: ManualClock, verifier: CheckpointVerifier) -> Database:
    fill(db, clock, 30)
    assert verify(db, verifier).ok
    return db


def test_a_changed_entry_is_named(thirty: Database, verifier: CheckpointVerifier) -> None:
    entry = raw_entry(thirty, 7)
    entry["recipient_id"] = "rcp-someone-else"
    raw_set_entry(thirty, 7, entry, recipient_id="rcp-someone-else")
    assert_bad(verify(thirty, verifier), 7, "entry 7 was changed")


def test_a_changed_detail_is_named(thirty: Database, verifier: CheckpointVerifier) -> None:
    entry = raw_entry(thirty, 12)
    entry["details"]["attempt"] = 2
    raw_set_entry(thirty, 12, entry)
    assert_bad(verify(thirty, verifier), 12, "entry 12 was changed")


def test_a_changed_column_is_named(thirty: Database, verifier: CheckpointVerifier) -> None:
    raw(thirty, "UPDATE audit_entry SET recipient_id = 'rcp-other' WHERE seq = 9")
    assert_bad(verify(thirty, verifier), 9, "recipient_id column disagrees")


def test_an_extra_key_in_the_json_is_named(thirty: Database, verifier: CheckpointVerifier) -> None:
    entry = raw_entry(thirty, 4)
    entry["note"] = "added later"
    raw_set_entry(thirty, 4, entry)
    assert_bad(verify(thirty, verifier), 4, "entry 4 cannot be read")


def test_a_deleted_entry_is_named(thirty: Database, verifier: CheckpointVerifier) -> None:
    raw(thirty, "DELETE FROM audit_entry WHERE seq = 11")
    assert_bad(verify(thirty, verifier), 11, "entry 11 is missing")


def test_swapped_entries_are_named(thirty: Database, verifier: CheckpointVerifier) -> None:
    raw_move(thirty, 5, -1)
    raw_move(thirty, 9, 5)
    raw_move(thirty, -1, 9)
    assert_bad(verify(thirty, verifier), 5, "entry 5 holds the entry recorded as seq 9")


def test_an_entry_inserted_in_the_middle_is_detected(
    thirty: Database, clock: ManualClock, verifier: CheckpointVerifier
) -> None:
    # Make room at 10 (one row at a time, from the end) and put a well-formed entry there,
    # with its own correct leaf hash: only the rows it pushed along show, from seq 11.
    for seq in range(29, 9, -1):
        raw_move(thirty, seq, seq + 1)
    raw_insert(thirty, make_entry(99, clock.now(), recipient_id="rcp-forged").with_seq(10))
    assert_bad(verify(thirty, verifier), 11, "entry 11 holds the entry recorded as seq 10")


def test_an_entry_appended_behind_the_logs_back_is_detected(
    thirty: Database, clock: ManualClock, verifier: CheckpointVerifier
) -> None:
    raw_insert(thirty, make_entry(99, clock.now()).with_seq(31))  # skipping seq 30
    assert_bad(verify(thirty, verifier), 30, "entry 30 is missing")
    raw(thirty, "DELETE FROM audit_entry WHERE seq = 31")
    forged = make_entry(99, clock.now()).with_seq(30).to_json()
    raw_insert(thirty, make_entry(99, clock.now()).with_seq(30))
    raw_set_entry(thirty, 30, {**forged, "seq": 12})  # claims another place
    assert_bad(verify(thirty, verifier), 30, "recorded as seq 12")


# --- tampering against checkpoints ---------------------------------------------------------


def test_a_truncated_tail_is_detected_below_the_checkpoint(
    thirty: Database, clock: ManualClock, signer: CheckpointSigner, verifier: CheckpointVerifier
) -> None:
    checkpoint(thirty, signer, clock)
    raw(thirty, "DELETE FROM audit_entry WHERE seq >= 25")
    result = verify(thirty, verifier)
    assert_bad(result, 25, "entries 25..29 were removed")
    assert result.size == 25


def test_without_a_checkpoint_a_truncated_tail_cannot_be_seen(
    thirty: Database, verifier: CheckpointVerifier
) -> None:
    # The limit of any log without an outside anchor: why checkpoints are written.
    raw(thirty, "DELETE FROM audit_entry WHERE seq >= 25")
    assert verify(thirty, verifier).ok


def recompute_everything(db: Database, seq: int) -> None:
    """The careful attacker: change one entry and rehash everything stored about it."""
    entry = raw_entry(db, seq)
    entry["decision"] = "denied"
    entry["record_count"] = 0
    raw_set_entry(db, seq, entry, rehash=True)


def test_a_fully_recomputed_log_fails_against_the_signed_checkpoints(
    db: Database, clock: ManualClock, signer: CheckpointSigner, verifier: CheckpointVerifier
) -> None:
    for _ in range(3):  # checkpoints at 10, 20 and 30 entries
        count = db.run_sync(audit.size)
        entries = [make_entry(i, clock.now()) for i in range(count, count + 10)]
        db.run_sync(lambda s, e=entries: audit.append(s, e), write=True)  # type: ignore[misc]
        clock.advance(timedelta(minutes=5))
        checkpoint(db, signer, clock)
    recompute_everything(db, 14)
    # Entry by entry the log is self-consistent now...
    assert not verify(db, None).ok  # even unchecked, the stored checkpoints' roots differ
    result = verify(db, verifier)
    # ...but entries 0..9 match the checkpoint of 10, and something in 10..19 does not
    # match the checkpoint of 20: the entry that differs is in that range.
    assert_bad(result, 10, "entries 10..19 do not match stored checkpoint #2 of size 20")
    assert result.checkpoint_size == 10


def test_a_recomputed_log_with_its_checkpoints_deleted_fails_against_a_kept_note(
    thirty: Database, clock: ManualClock, signer: CheckpointSigner, verifier: CheckpointVerifier
) -> None:
    kept = checkpoint(thirty, signer, clock).note()  # e.g. published, or given to a witness
    recompute_everything(thirty, 3)
    raw(thirty, "DELETE FROM audit_checkpoint")
    assert verify(thirty, verifier).ok  # nothing left inside the database to tell
    assert_bad(verify(thirty, verifier, kept), 0, "entries 0..29 do not match given checkpoint")


def test_a_checkpoint_forged_with_another_key_fails(
    thirty: Database, clock: ManualClock, signer: CheckpointSigner, tmp_path: Path
) -> None:
    checkpoint(thirty, signer, clock)
    recompute_everything(thirty, 3)
    impostor = CheckpointSigner.generate(tmp_path / "impostor.pem")
    # Rewrite the stored checkpoint with the tampered root, signed by the impostor.
    leaves = [
        bytes.fromhex(r[0]) for r in raw(thirty, "SELECT leaf_hash FROM audit_entry ORDER BY seq")
    ]
    note = impostor.sign(30, merkle.root(leaves), clock.now())
    raw(
        thirty,
        "UPDATE audit_checkpoint SET note = :note, root_hash = :root",
        note=note.note(),
        root=note.root_hex,
    )
    assert verify(thirty, None).ok  # unsigned-checked, the forgery looks fine
    result = verify(thirty, signer.verifier())
    assert_bad(result, None, "signed by an unknown key")


def test_a_stored_checkpoint_whose_columns_disagree_fails(
    thirty: Database, clock: ManualClock, signer: CheckpointSigner, verifier: CheckpointVerifier
) -> None:
    checkpoint(thirty, signer, clock)
    raw(thirty, "UPDATE audit_checkpoint SET tree_size = 12")
    assert_bad(verify(thirty, verifier), None, "stored as size 12, its note says 30")


def test_a_checkpoint_is_never_signed_over_a_change(
    thirty: Database, clock: ManualClock, signer: CheckpointSigner, verifier: CheckpointVerifier
) -> None:
    checkpoint(thirty, signer, clock)
    fill_more = [make_entry(i, clock.now()) for i in range(30, 40)]
    thirty.run_sync(lambda s: audit.append(s, fill_more), write=True)
    # A careless change after the last checkpoint: refused.
    entry = raw_entry(thirty, 35)
    entry["purpose"] = "marketing"
    raw_set_entry(thirty, 35, entry)
    with pytest.raises(AuditLogInvalid, match="entry 35 was changed") as refused:
        checkpoint(thirty, signer, clock)
    assert refused.value.extra["first_bad_seq"] == 35
    # A careful change before it: refused too.
    raw_set_entry(thirty, 35, entry, rehash=True)
    recompute_everything(thirty, 20)
    with pytest.raises(AuditLogInvalid, match="do not match stored checkpoint"):
        checkpoint(thirty, signer, clock)


def test_a_careless_change_under_a_checkpoint_is_still_named_after_the_next_one(
    thirty: Database, clock: ManualClock, signer: CheckpointSigner, verifier: CheckpointVerifier
) -> None:
    checkpoint(thirty, signer, clock)
    entry = raw_entry(thirty, 8)
    entry["channel"] = "webhook"
    raw_set_entry(thirty, 8, entry)  # the stored leaf hash is untouched
    later = checkpoint(thirty, signer, clock)  # signs the stored, original leaves
    assert later.size == 30
    assert_bad(verify(thirty, verifier), 8, "entry 8 was changed")
