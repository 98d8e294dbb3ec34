"""Revocation listeners: all run in the same step as the grant's end, or none does."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select
from worlds import NOW, World

from broker.domain.grants import GrantAction, GrantState
from broker.gate.revocation import GrantEnded, RevocationListeners
from broker.store import grants as grant_store
from broker.store.tables import NoticeRow


def test_listener_names_are_unique() -> None:
    listeners = RevocationListeners()
    listeners.register("tokens", lambda _s, _e: None)
    with pytest.raises(ValueError, match="already registered"):
        listeners.register("tokens", lambda _s, _e: None)
    assert listeners.names == ("tokens",)


async def test_every_listener_runs_when_a_grant_ends(world: World) -> None:
    world.ended.clear()  # what ended while the seed loaded
    seen: list[str] = []
    world.grants.listeners.register("webhooks", lambda _s, e: seen.append(f"drop {e.grant.id}"))

    def end(session: Session) -> None:
        world.grants.transition(session, "gr-677f38bc93017473", GrantAction.WITHDRAW, at=NOW)

    world.db.run_sync(end, write=True)
    assert seen == ["drop gr-677f38bc93017473"]
    assert [e.previous_state for e in world.ended] == [GrantState.ACTIVE]


async def test_a_failing_listener_undoes_the_whole_revocation(world: World) -> None:
    def broken(_session: Session, _ended: GrantEnded) -> None:
        raise RuntimeError("token store unavailable")

    world.grants.listeners.register("tokens", broken)

    def end(session: Session) -> None:
        world.grants.transition(session, "gr-677f38bc93017473", GrantAction.WITHDRAW, at=NOW)

    with pytest.raises(RuntimeError):
        world.db.run_sync(end, write=True)
    grant = world.db.run_sync(lambda s: grant_store.get(s, "gr-677f38bc93017473"))
    assert grant is not None
    assert grant.state is GrantState.ACTIVE  # not half-revoked
    notices = world.db.run_sync(lambda s: s.exec(select(NoticeRow)).all())
    assert [n for n in notices if n.grant_id == "gr-677f38bc93017473"] == []


async def test_a_change_of_owner_sends_the_notice(world: World) -> None:
    from broker.services.grants import GrantService

    assert isinstance(world.grants, GrantService)
    seeded = {n.id for n in world.db.run_sync(lambda s: s.exec(select(NoticeRow)).all())}
    world.db.run_sync(
        lambda s: world.grants.change_owner(s, "WMWXR31002TA10001", "cus-bram", at=NOW),
        write=True,
    )
    notices = [
        n
        for n in world.db.run_sync(lambda s: s.exec(select(NoticeRow)).all())
        if n.id not in seeded
    ]
    assert {n.grant_id for n in notices} == {"gr-677f38bc93017473"}
    assert notices[0].kind == "grant_ended"
