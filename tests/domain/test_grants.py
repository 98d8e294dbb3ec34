"""The grant state machine: every transition allowed or refused as the table says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.domain.grants import Grant, GrantAction, GrantState
from broker.domain.legal import Activation
from broker.errors import TransitionRefused

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)

S = GrantState
A = GrantAction

# (action, states it is allowed from, target state: None keeps it), independent of activation.
TABLE: dict[GrantAction, tuple[set[GrantState], GrantState | None]] = {
    A.ACTIVATE: ({S.PENDING}, S.ACTIVE),
    A.WITHDRAW: ({S.PENDING, S.ACTIVE, S.SUSPENDED}, S.REVOKED),
    A.OBJECT: ({S.ACTIVE, S.SUSPENDED}, S.OBJECTED),
    A.EXPIRE: ({S.PENDING, S.ACTIVE, S.SUSPENDED}, S.EXPIRED),
    A.SUSPEND: ({S.ACTIVE}, S.SUSPENDED),
    A.RESUME: ({S.SUSPENDED}, S.ACTIVE),
    A.OWNER_CHANGED: ({S.PENDING, S.ACTIVE, S.SUSPENDED}, S.REVOKED),
    A.TERMINATE: ({S.PENDING, S.ACTIVE, S.SUSPENDED}, S.REVOKED),
    A.REFUSE: ({S.PENDING, S.ACTIVE, S.SUSPENDED}, S.REVOKED),
    A.AMEND: ({S.PENDING, S.ACTIVE, S.SUSPENDED}, None),  # new terms, the same state
}
# Which activations admit the legally guarded actions.
LEGAL = {
    A.WITHDRAW: {Activation.CONSENT, Activation.CONTRACT},
    A.OBJECT: {Activation.LEGITIMATE_INTEREST, Activation.FLEET_CLEARANCE},
    A.OWNER_CHANGED: {Activation.CONSENT, Activation.CONTRACT},
    A.REFUSE: {Activation.LEGAL_OBLIGATION},  # OBFCM: the owner may refuse at the workshop
    A.AMEND: {Activation.CONSENT, Activation.CONTRACT},  # the customer approves again
}

# How to reach each state from pending.
PATHS: dict[GrantState, list[GrantAction]] = {
    S.PENDING: [],
    S.ACTIVE: [A.ACTIVATE],
    S.SUSPENDED: [A.ACTIVATE, A.SUSPEND],
    S.REVOKED: [A.TERMINATE],
    S.EXPIRED: [A.EXPIRE],
    S.OBJECTED: [A.ACTIVATE, A.OBJECT],
}


def make(activation: Activation = Activation.CONSENT, **overrides: object) -> Grant:
    values: dict[str, object] = {
        "id": "gr-1",
        "contract_id": "insurer-ubi",
        "contract_version": 1,
        "recipient_id": "rcp-insurer",
        "vin": "WMWXXXXXXXX000001",
        "activation": activation,
        "categories": frozenset({"vehicle.status"}),
        "valid_from": T0,
        "customer_id": "cus-anna",
    }
    values.update(overrides)
    return Grant.create(at=T0, **values)


def reach(state: GrantState, activation: Activation) -> Grant | None:
    grant = make(activation)
    at = T0
    for action in PATHS[state]:
        if grant.allows(action) is not None:
            return None
        at += HOUR
        grant = grant.apply(action, at=at)
    return grant


def _reachable_cases() -> list[tuple[Activation, GrantState, GrantAction]]:
    # Objected is reachable only for legitimate-interest grants; every other pair is tested.
    return [
        (activation, state, action)
        for activation in Activation
        for state in GrantState
        if reach(state, activation) is not None
        for action in GrantAction
    ]


def test_objected_is_reachable_under_legitimate_interest_and_fleet_clearance() -> None:
    reachable = {a for a in Activation if reach(S.OBJECTED, a) is not None}
    assert reachable == {Activation.LEGITIMATE_INTEREST, Activation.FLEET_CLEARANCE}


@pytest.mark.parametrize(("activation", "state", "action"), _reachable_cases())
def test_every_transition_follows_the_table(
    activation: Activation, state: GrantState, action: GrantAction
) -> None:
    grant = reach(state, activation)
    assert grant is not None
    sources, changed = TABLE[action]
    target = changed or state
    expected_ok = state in sources and activation in LEGAL.get(action, set(Activation))
    at = T0 + 10 * HOUR
    if expected_ok:
        after = grant.apply(action, at=at, reason="test")
        assert after.state is target
        assert after.history[-1].from_state is state
        assert after.history[-1].to_state is target
        assert len(after.history) == len(grant.history) + 1
    else:
        assert grant.allows(action) is not None
        with pytest.raises(TransitionRefused):
            grant.apply(action, at=at)


def test_terminal_states_admit_nothing() -> None:
    for state in (S.REVOKED, S.EXPIRED):
        grant = reach(state, Activation.CONSENT)
        assert grant is not None
        assert all(grant.allows(a) is not None for a in GrantAction)


def test_legal_obligation_refuses_objection_with_a_reason() -> None:
    grant = make(Activation.LEGAL_OBLIGATION).apply(A.ACTIVATE, at=T0)
    reason = grant.allows(A.OBJECT)
    assert reason is not None and "legal obligation" in reason
    with pytest.raises(TransitionRefused):
        grant.apply(A.OBJECT, at=T0 + HOUR)


def test_objection_ends_a_legitimate_interest_grant() -> None:
    grant = make(Activation.LEGITIMATE_INTEREST).apply(A.ACTIVATE, at=T0)
    objected = grant.apply(A.OBJECT, at=T0 + HOUR, reason="customer objected")
    assert objected.state is S.OBJECTED
    assert not objected.is_active(T0 + 2 * HOUR)


def test_validity_follows_the_clock() -> None:
    grant = make(valid_until=T0 + 24 * HOUR).apply(A.ACTIVATE, at=T0)
    assert grant.is_active(T0 + HOUR)
    assert grant.effective_state(T0 + 24 * HOUR) is S.EXPIRED
    assert not grant.is_active(T0 + 25 * HOUR)
    assert grant.state is S.ACTIVE  # the stored state moves only when the sweeper runs


def test_not_active_before_its_validity_starts() -> None:
    grant = make(valid_from=T0 + 5 * HOUR).apply(A.ACTIVATE, at=T0)
    assert not grant.is_active(T0 + HOUR)
    assert grant.is_active(T0 + 6 * HOUR)


def test_validity_must_end_after_it_starts() -> None:
    with pytest.raises(ValueError, match="validity"):
        make(valid_until=T0)


def test_a_transition_cannot_predate_the_last_event() -> None:
    grant = make().apply(A.ACTIVATE, at=T0 + HOUR)
    with pytest.raises(TransitionRefused):
        grant.apply(A.WITHDRAW, at=T0)


def test_covers_only_data_recorded_while_active() -> None:
    grant = (
        make(valid_until=T0 + 100 * HOUR)
        .apply(A.ACTIVATE, at=T0 + HOUR)
        .apply(A.SUSPEND, at=T0 + 3 * HOUR)
        .apply(A.RESUME, at=T0 + 5 * HOUR)
    )
    assert not grant.covers(T0 + HOUR / 2)  # pending
    assert grant.covers(T0 + HOUR)
    assert grant.covers(T0 + 2 * HOUR)
    assert not grant.covers(T0 + 4 * HOUR)  # suspended
    assert grant.covers(T0 + 50 * HOUR)
    assert not grant.covers(T0 + 100 * HOUR)  # validity over
    ended = grant.apply(A.WITHDRAW, at=T0 + 60 * HOUR)
    assert ended.covers(T0 + 59 * HOUR)
    assert not ended.covers(T0 + 61 * HOUR)


@given(
    st.lists(st.sampled_from(list(GrantAction)), max_size=12),
    st.sampled_from(list(Activation)),
    st.integers(min_value=0, max_value=200),
)
def test_random_walks_keep_history_and_coverage_consistent(
    actions: list[GrantAction], activation: Activation, probe_hours: int
) -> None:
    grant = make(activation)
    at = T0
    for action in actions:
        at += HOUR
        if grant.allows(action) is None:
            grant = grant.apply(action, at=at)
        else:
            with pytest.raises(TransitionRefused):
                grant.apply(action, at=at)
    # History is a chain: each event starts where the previous one ended.
    for before, after in zip(grant.history, grant.history[1:], strict=False):
        assert after.from_state is before.to_state
        assert after.at >= before.at
    assert grant.history[-1].to_state is grant.state
    # Coverage holds exactly when the last event at or before the probe made it active.
    probe = T0 + probe_hours * HOUR / 10
    last = [e for e in grant.history if e.at <= probe]
    expected = bool(last) and last[-1].to_state is S.ACTIVE
    assert grant.covers(probe) is expected


# -- re-consent: amendments -------------------------------------------------------------

STATUS, POSITION, GENERAL = "vehicle.status", "vehicle.position", "vehicle.general"


def amended(*steps: tuple[int, set[str], str | None], first: set[str] | None = None) -> Grant:
    """A consent grant active from T0 with ``first`` (status only), amended at each
    ``(hours after T0, categories, precision)``."""
    grant = make(categories=frozenset(first or {STATUS})).apply(A.ACTIVATE, at=T0)
    for hours, categories, precision in steps:
        grant = grant.amend(
            at=T0 + hours * HOUR, categories=frozenset(categories), location_precision=precision
        )
    return grant


def test_an_amendment_keeps_one_grant_its_state_and_its_range() -> None:
    before = make().apply(A.ACTIVATE, at=T0)
    after = before.amend(
        at=T0 + 5 * HOUR,
        categories=frozenset({STATUS, POSITION}),
        location_precision="precise",
        reason="consent given again",
    )
    assert after.id == before.id and after.state is S.ACTIVE
    assert after.categories == {STATUS, POSITION} and after.location_precision == "precise"
    assert after.history[:-1] == before.history
    last = after.history[-1]
    assert (last.action, last.from_state, last.to_state) == (A.AMEND, S.ACTIVE, S.ACTIVE)
    assert last.reason == "consent given again"
    assert after.active_periods() == before.active_periods() == [(T0, None)]
    # the terms it was given with are kept as the first amendment
    assert [(a.at, a.categories) for a in after.amendments] == [
        (T0, frozenset({STATUS})),
        (T0 + 5 * HOUR, frozenset({STATUS, POSITION})),
    ]


def test_an_added_category_covers_only_data_recorded_from_the_amendment_on() -> None:
    grant = amended((5, {STATUS, POSITION}, "precise"))
    assert grant.terms_at(T0 + HOUR).categories == {STATUS}
    assert grant.terms_at(T0 + 5 * HOUR - timedelta(seconds=1)).categories == {STATUS}
    assert grant.terms_at(T0 + 5 * HOUR).categories == {STATUS, POSITION}
    assert grant.terms_at(T0 + 50 * HOUR).categories == {STATUS, POSITION}


def test_a_removed_category_stops_at_once_and_adding_it_back_does_not_revive_it() -> None:
    grant = amended((2, {STATUS}, None), first={STATUS, POSITION})
    assert grant.terms_at(T0 + HOUR).categories == {STATUS}  # older data too
    grant = grant.amend(
        at=T0 + 4 * HOUR, categories=frozenset({STATUS, POSITION}), location_precision="coarse"
    )
    assert grant.terms_at(T0 + HOUR).categories == {STATUS}
    assert grant.terms_at(T0 + 3 * HOUR).categories == {STATUS}
    assert grant.terms_at(T0 + 4 * HOUR).categories == {STATUS, POSITION}


def test_a_finer_precision_applies_only_forward_and_a_coarser_one_at_once() -> None:
    finer = amended((1, {STATUS, POSITION}, "coarse"), (3, {STATUS, POSITION}, "precise"))
    assert finer.terms_at(T0 + 2 * HOUR).location_precision == "coarse"
    assert finer.terms_at(T0 + 3 * HOUR).location_precision == "precise"
    coarser = amended((1, {STATUS, POSITION}, "precise"), (3, {STATUS, POSITION}, "coarse"))
    assert coarser.terms_at(T0 + 2 * HOUR).location_precision == "coarse"
    assert coarser.terms_at(T0 + 4 * HOUR).location_precision == "coarse"


def test_a_grant_never_amended_has_its_terms_throughout() -> None:
    grant = make(categories=frozenset({STATUS, POSITION}), location_precision="coarse")
    terms = grant.apply(A.ACTIVATE, at=T0).terms_at(T0 + 10 * HOUR)
    assert terms.categories == {STATUS, POSITION} and terms.location_precision == "coarse"


def test_an_ended_grant_or_one_no_customer_gave_cannot_be_amended() -> None:
    ended = make().apply(A.ACTIVATE, at=T0).apply(A.WITHDRAW, at=T0 + HOUR)
    vehicle_linked = make(Activation.LEGITIMATE_INTEREST).apply(A.ACTIVATE, at=T0)
    for grant in (ended, vehicle_linked):
        with pytest.raises(TransitionRefused):
            grant.amend(at=T0 + 2 * HOUR, categories=frozenset({STATUS}), location_precision=None)
    active = make().apply(A.ACTIVATE, at=T0 + HOUR)
    with pytest.raises(TransitionRefused, match="predate"):
        active.amend(at=T0, categories=frozenset({STATUS}), location_precision=None)
    suspended = active.apply(A.SUSPEND, at=T0 + 2 * HOUR)
    still = suspended.amend(
        at=T0 + 3 * HOUR, categories=frozenset({STATUS}), location_precision=None
    )
    assert still.state is S.SUSPENDED  # the operator's suspension is not lifted


_DETAIL = {"coarse": 0, "precise": 1, None: 1}


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=5),
            st.sets(st.sampled_from([STATUS, POSITION, GENERAL]), min_size=1),
            st.sampled_from([None, "coarse", "precise"]),
        ),
        max_size=6,
    ),
    st.integers(min_value=-10, max_value=400),
    st.integers(min_value=0, max_value=400),
)
def test_older_data_never_gets_more_than_newer_data_or_the_current_terms(
    steps: list[tuple[int, set[str], str | None]], early: int, later: int
) -> None:
    grant = make(categories=frozenset({STATUS, POSITION}), location_precision="coarse")
    grant = grant.apply(A.ACTIVATE, at=T0)
    at = T0
    for gap, categories, precision in steps:
        at += gap * HOUR
        grant = grant.amend(at=at, categories=frozenset(categories), location_precision=precision)
    first = grant.terms_at(T0 + early * HOUR / 10)
    second = grant.terms_at(T0 + (early + later) * HOUR / 10)
    for terms in (first, second):
        assert terms.categories <= grant.categories
        assert _DETAIL[terms.location_precision] <= _DETAIL[grant.location_precision]
    assert first.categories <= second.categories
    assert _DETAIL[first.location_precision] <= _DETAIL[second.location_precision]
    now = grant.terms_at(at)
    assert (now.categories, now.location_precision) == (
        grant.categories,
        grant.location_precision,
    )
