"""Signed checkpoints: C2SP notes signed with an Ed25519 key kept in a file."""

from __future__ import annotations

import base64
import hashlib
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from broker.audit.checkpoint import (
    DEFAULT_ORIGIN,
    Checkpoint,
    CheckpointSigner,
    CheckpointVerifier,
    InvalidCheckpoint,
)
from broker.audit.merkle import leaf_hash, root

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
ROOT = root([leaf_hash(bytes([i])) for i in range(5)])


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit-signing-key.pem"
    CheckpointSigner.generate(path)
    return path


@pytest.fixture
def signer(key_file: Path) -> CheckpointSigner:
    return CheckpointSigner.from_file(key_file)


def test_a_generated_key_is_private_pkcs8_pem(key_file: Path) -> None:
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    pem = key_file.read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS #8, unencrypted
    with pytest.raises(FileExistsError):
        CheckpointSigner.generate(key_file)  # never overwritten
    assert key_file.read_bytes() == pem


def test_a_checkpoint_round_trips_through_its_note(signer: CheckpointSigner) -> None:
    checkpoint = signer.sign(5, ROOT, T0)
    note = checkpoint.note()
    verified = signer.verifier().verify(note)
    assert verified == checkpoint
    assert (verified.size, verified.root, verified.at) == (5, ROOT, T0)
    assert Checkpoint.parse(note) == checkpoint


def test_the_note_is_a_c2sp_checkpoint(signer: CheckpointSigner) -> None:
    note = signer.sign(5, ROOT, T0).note()
    text, signature_line = note.split("\n\n")
    assert text.split("\n") == [
        DEFAULT_ORIGIN,
        "5",
        base64.b64encode(ROOT).decode(),
        "time 2026-03-02T08:00:00Z",
    ]
    dash, name, blob = signature_line.rstrip("\n").split(" ")
    assert dash == "\u2014"
    assert name == DEFAULT_ORIGIN
    raw = base64.b64decode(blob)
    public = serialization.load_pem_public_key(signer.public_key_pem())
    public_raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    expected_id = hashlib.sha256(DEFAULT_ORIGIN.encode() + b"\n\x01" + public_raw).digest()[:4]
    assert raw[:4] == expected_id
    assert len(raw) == 4 + 64


def test_times_are_signed_in_utc(signer: CheckpointSigner) -> None:
    cet = timezone(timedelta(hours=1))
    checkpoint = signer.sign(1, ROOT, datetime(2026, 3, 2, 9, 0, 0, 250_000, tzinfo=cet))
    assert "time 2026-03-02T08:00:00.250000Z" in checkpoint.note()
    assert signer.verifier().verify(checkpoint.note()).at == T0 + timedelta(milliseconds=250)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("\n5\n", "\n6\n"),  # size
        ("\n5\n", "\n4\n"),
        ("time 2026-03-02T08:00:00Z", "time 2026-03-02T09:00:00Z"),  # time
    ],
)
def test_a_changed_note_fails(signer: CheckpointSigner, old: str, new: str) -> None:
    note = signer.sign(5, ROOT, T0).note()
    assert old in note
    with pytest.raises(InvalidCheckpoint, match="signature does not verify"):
        signer.verifier().verify(note.replace(old, new))


def test_a_changed_root_fails(signer: CheckpointSigner) -> None:
    checkpoint = signer.sign(5, ROOT, T0)
    other_root = root([leaf_hash(bytes([i])) for i in range(6)])
    forged = Checkpoint(
        origin=checkpoint.origin,
        size=checkpoint.size,
        root=other_root,
        at=checkpoint.at,
        key_name=checkpoint.key_name,
        key_id=checkpoint.key_id,
        signature=checkpoint.signature,
    )
    with pytest.raises(InvalidCheckpoint, match="signature does not verify"):
        signer.verifier().verify(forged.note())
    with pytest.raises(InvalidCheckpoint):
        signer.verifier().verify(forged)


def test_another_key_is_unknown(signer: CheckpointSigner, tmp_path: Path) -> None:
    impostor = CheckpointSigner.generate(tmp_path / "impostor.pem")
    note = impostor.sign(5, ROOT, T0).note()
    with pytest.raises(InvalidCheckpoint, match="unknown key"):
        signer.verifier().verify(note)
    # The impostor's signature line under the real key id still fails.
    real = signer.sign(5, ROOT, T0)
    spliced = Checkpoint.parse(note)
    spliced = Checkpoint(
        origin=spliced.origin,
        size=spliced.size,
        root=spliced.root,
        at=spliced.at,
        key_name=spliced.key_name,
        key_id=real.key_id,
        signature=spliced.signature,
    )
    with pytest.raises(InvalidCheckpoint, match="signature does not verify"):
        signer.verifier().verify(spliced.note())


def test_a_checkpoint_of_another_log_is_refused(key_file: Path) -> None:
    other_log = CheckpointSigner.from_file(key_file, origin="example.org/other-log")
    note = other_log.sign(5, ROOT, T0).note()
    with pytest.raises(InvalidCheckpoint, match="not 'vehicle-data-broker/audit'"):
        CheckpointVerifier.from_file(key_file).verify(note)
    assert CheckpointVerifier.from_file(key_file, origin="example.org/other-log").verify(note)


def test_the_verifier_needs_only_the_public_key(signer: CheckpointSigner, tmp_path: Path) -> None:
    public = tmp_path / "audit.pub.pem"
    public.write_bytes(signer.public_key_pem())
    assert b"PRIVATE" not in public.read_bytes()
    note = signer.sign(0, root([]), T0).note()
    assert CheckpointVerifier.from_file(public).verify(note).size == 0


def test_keys_that_are_not_ed25519_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(InvalidCheckpoint, match="not an Ed25519 key"):
        CheckpointSigner.from_file(path)
    with pytest.raises(InvalidCheckpoint, match="not an Ed25519 key"):
        CheckpointVerifier.from_file(path)
    with pytest.raises(InvalidCheckpoint, match="cannot load"):
        CheckpointSigner.from_file(tmp_path / "missing.pem")


@pytest.mark.parametrize(
    "note",
    [
        "",
        "just text\n",
        f"{DEFAULT_ORIGIN}\n5\nnot-base64!\ntime 2026-03-02T08:00:00Z\n\n\u2014 x AAAA\n",
        f"{DEFAULT_ORIGIN}\n05\n{base64.b64encode(ROOT).decode()}\ntime 2026-03-02T08:00:00Z\n\n",
        f"{DEFAULT_ORIGIN}\n5\n{base64.b64encode(b'short').decode()}\ntime 2026-03-02T08:00:00Z\n",
    ],
)
def test_malformed_notes_are_refused(note: str) -> None:
    with pytest.raises(InvalidCheckpoint):
        Checkpoint.parse(note)


def test_a_note_with_an_extra_line_is_refused(signer: CheckpointSigner) -> None:
    note = signer.sign(5, ROOT, T0).note()
    with pytest.raises(InvalidCheckpoint):
        signer.verifier().verify(note.replace("time ", "extra\ntime "))
    with pytest.raises(InvalidCheckpoint):
        signer.verifier().verify(note + note.split("\n\n")[1])  # a second signature line
