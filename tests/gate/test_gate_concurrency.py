"""Releases racing a revocation; group commit; erasure and the audit log."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import Session
from worlds import COOPER, NOW, World

from broker.audit.checkpoint import CheckpointSigner
from broker.domain.contracts import Channel
from broker.domain.grants import GrantAction
from broker.gate.release import Denial, Outcome, Release, ReleaseRequest, VehicleTarget
from broker.store import audit as audit_store

HOUR = timedelta(hours=1)


def request() -> ReleaseRequest:
    return ReleaseRequest(
        recipient_id="rcp-insurer",
        contract_id="insurer-ubi",
        channel=Channel.PULL,
        purpose="usage-based-insurance",
        target=VehicleTarget(COOPER),
        categories=frozenset({"vehicle.status"}),
        since=NOW - 2 * HOUR,
        until=NOW,
    )


async def test_no_release_after_the_revocation_committed(world: World) -> None:
    world.drive(COOPER, NOW - HOUR, 20)
    before = world.db.run_sync(audit_store.size)

    def revoke(session: Session) -> int:
        world.grants.transition(
            session, "gr-677f38bc93017473", GrantAction.WITHDRAW, at=NOW, reason="withdrawn"
        )
        return audit_store.size(session)  # the revocation's own entries end here

    first = [asyncio.create_task(world.gate.release(request())) for _ in range(40)]
    await asyncio.sleep(0)
    revocation = asyncio.create_task(world.db.write(revoke))
    second = [asyncio.create_task(world.gate.release(request())) for _ in range(40)]
    outcomes: list[Outcome] = await asyncio.gather(*first, *second)
    revoked_at_size = await revocation

    releases = [o for o in outcomes if isinstance(o, Release)]
    denials = [o for o in outcomes if isinstance(o, Denial)]
    assert len(releases) + len(denials) == 80
    # Every release was audited before the revocation's entries; every later one is denied.
    assert all(r.audit_seq < revoked_at_size for r in releases)
    assert all(d.codes == ("grant_revoked",) for d in denials)
    assert all(d.audit_seq >= revoked_at_size for d in denials)
    assert denials, "the second wave must have met the revocation"

    # Audit entries equal releases exactly: one per outcome, each with its decision.
    entries = world.db.run_sync(lambda s: audit_store.read(s, start=before, limit=10_000))
    decisions = [e for e in entries if e.kind in {"release", "denial"}]
    assert len(decisions) == 80
    by_seq = {e.seq: e for e in decisions}
    for outcome in outcomes:
        entry = by_seq[outcome.audit_seq]
        assert entry.decision == ("denied" if isinstance(outcome, Denial) else "released")
    assert len({o.audit_seq for o in outcomes}) == 80
    assert world.db.run_sync(lambda s: audit_store.verify(s, None)).ok


async def test_concurrent_releases_share_commits(world: World) -> None:
    world.drive(COOPER, NOW - HOUR, 5)
    outcomes = await asyncio.gather(*(world.gate.release(request()) for _ in range(100)))
    assert all(isinstance(o, Release) for o in outcomes)
    committer = world.gate.committer
    assert committer.jobs == 100
    assert committer.batches < committer.jobs  # batched: fewer commits than releases


async def test_one_failing_item_does_not_sink_its_batch(world: World) -> None:
    def boom(_session: Session) -> None:
        raise RuntimeError("boom")

    results = await asyncio.gather(
        world.gate.release(request()),
        world.gate.committer.submit(boom),
        world.gate.release(request()),
        return_exceptions=True,
    )
    assert isinstance(results[1], RuntimeError)
    assert isinstance(results[0], Denial | Release)
    assert isinstance(results[2], Denial | Release)
    assert world.db.run_sync(lambda s: audit_store.verify(s, None)).ok


async def test_erasing_a_customers_data_leaves_the_audit_log_verifiable(
    world: World, tmp_path: object
) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    world.drive(COOPER, NOW - HOUR, 10)
    for _ in range(3):
        assert isinstance(await world.gate.release(request()), Release)
    signer = CheckpointSigner.generate(tmp_path / "audit.key")
    world.db.run_sync(lambda s: audit_store.write_checkpoint(s, signer, NOW), write=True)

    def erase(session: Session) -> None:
        session.execute(sa.text("DELETE FROM telemetry_record WHERE vin = :vin"), {"vin": COOPER})
        session.execute(
            sa.text(
                "UPDATE customer SET login = 'erased-1', password_hash = '' WHERE id = 'cus-anna'"
            )
        )

    world.db.run_sync(erase, write=True)
    result = world.db.run_sync(lambda s: audit_store.verify(s, signer.verifier()))
    assert result.ok, result.problem
    assert result.checkpoint_size == result.size
