"""The transfer-country check (GDPR Chapter V): each mechanism, each refusal, fail closed."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.domain.parties import Recipient, RecipientKind, RecipientRole, SccAgreement
from broker.transfer import AdequacyTable, Mechanism, Scope, TransferDecision, check_transfer
from broker.transfer import check as check_module

TABLE_FILE = Path(__file__).resolve().parents[2] / "contracts" / "adequacy.json"
ON = date(2026, 3, 2)
DAY = timedelta(days=1)

CONTROLLER = RecipientRole.INDEPENDENT_CONTROLLER
PROCESSOR = RecipientRole.PROCESSOR


@pytest.fixture(scope="module")
def table() -> AdequacyTable:
    return AdequacyTable.load(TABLE_FILE)


def scc(
    module: int = 2,
    *,
    reference: str = "SCC-2026-1",
    signed_on: date = date(2025, 1, 1),
    expires_on: date | None = None,
    tia_reference: str | None = "TIA-7",
    tia_review_due: date | None = date(2026, 12, 31),
) -> SccAgreement:
    return SccAgreement(reference, module, signed_on, expires_on, tia_reference, tia_review_due)


def recipient(
    *countries: str,
    storage: tuple[str, ...] = (),
    role: RecipientRole = PROCESSOR,
    kind: RecipientKind = RecipientKind.SERVICE_PARTNER,
    headquarters: str = "NL",
    dpf_until: date | None = None,
    sccs: tuple[SccAgreement, ...] = (),
) -> Recipient:
    return Recipient(
        id="r1",
        name="Recipient",
        kind=kind,
        legal_entity="Recipient B.V.",
        role=role,
        headquarters_country=headquarters,
        processing_countries=countries,
        storage_countries=storage,
        dpf_certified_until=dpf_until,
        scc_agreements=sccs,
    )


def only(decision: TransferDecision) -> tuple[bool, Mechanism | None, str | None, str | None]:
    (country,) = decision.countries
    return country.allowed, country.mechanism, country.reference, country.tia_reference


def denial(decision: TransferDecision) -> str:
    assert not decision.allowed
    (reason,) = decision.reasons
    return reason


# --- which countries are checked ------------------------------------------------------------


def test_no_destination_country_is_a_denial(table: AdequacyTable) -> None:
    decision = check_transfer(recipient(), (), table, ON)
    assert not decision.allowed
    assert decision.countries == ()
    assert decision.reasons == ("no destination country known",)


def test_the_countries_are_the_union_of_recipient_and_contract(table: AdequacyTable) -> None:
    who = recipient("NL", "DE", storage=("IE", "NL"))
    decision = check_transfer(who, ["FR", "DE"], table, ON)
    assert [c.country for c in decision.countries] == ["DE", "FR", "IE", "NL"]
    assert decision.allowed


def test_the_contract_alone_can_add_a_denied_country(table: AdequacyTable) -> None:
    decision = check_transfer(recipient("NL"), ["CN"], table, ON)
    assert "CN: no valid transfer mechanism" in denial(decision)


def test_wrong_argument_types_are_programming_errors(table: AdequacyTable) -> None:
    with pytest.raises(TypeError):
        check_transfer(recipient("NL"), "NL", table, ON)
    with pytest.raises(TypeError):
        check_transfer(recipient("NL"), (), table, datetime(2026, 3, 2, tzinfo=UTC))


# --- EEA ----------------------------------------------------------------------------------


@pytest.mark.parametrize("country", ["NL", "DE", "GR", "HR", "IS", "LI", "NO"])
def test_eea_countries_need_no_mechanism(table: AdequacyTable, country: str) -> None:
    decision = check_transfer(recipient(country), (), table, ON)
    assert decision.allowed
    assert only(decision) == (True, Mechanism.EEA, None, None)


# --- adequacy (Art. 45) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("country", "reference"),
    [
        ("CH", "2000/518/EC"),
        ("AD", "2010/625/EU"),
        ("AR", "2003/490/EC"),
        ("BR", "2026/179"),
        ("FO", "2010/146/EU"),
        ("GG", "2003/821/EC"),
        ("IL", "2011/61/EU"),
        ("IM", "2004/411/EC"),
        ("JE", "2008/393/EC"),
        ("JP", "2019/419"),
        ("KR", "2022/254"),
        ("NZ", "2013/65/EU"),
        ("GB", "2021/1772"),
        ("UY", "2012/484/EU"),
    ],
)
def test_an_adequate_country_is_allowed_under_its_decision(
    table: AdequacyTable, country: str, reference: str
) -> None:
    decision = check_transfer(recipient(country), (), table, ON)
    assert only(decision) == (True, Mechanism.ADEQUACY, reference, None)


@pytest.mark.parametrize("role", [CONTROLLER, PROCESSOR])
def test_canada_covers_a_commercial_organisation_based_in_canada(
    table: AdequacyTable, role: RecipientRole
) -> None:
    who = recipient("CA", role=role, headquarters="CA", kind=RecipientKind.INSURER)
    assert only(check_transfer(who, (), table, ON)) == (True, Mechanism.ADEQUACY, "2002/2/EC", None)


def test_canada_does_not_cover_a_recipient_based_elsewhere(table: AdequacyTable) -> None:
    reason = denial(check_transfer(recipient("CA", headquarters="DE"), (), table, ON))
    assert reason.startswith("CA: ")
    assert "PIPEDA" in reason


def test_canada_does_not_cover_an_authority(table: AdequacyTable) -> None:
    who = recipient("CA", headquarters="CA", kind=RecipientKind.AUTHORITY)
    assert "PIPEDA" in denial(check_transfer(who, (), table, ON))


def test_canada_without_pipeda_falls_back_to_scc(table: AdequacyTable) -> None:
    who = recipient("CA", headquarters="DE", sccs=(scc(2),))
    assert only(check_transfer(who, (), table, ON)) == (True, Mechanism.SCC, "SCC-2026-1", "TIA-7")


@pytest.mark.parametrize("until", [ON, ON + DAY, date(2030, 1, 1)])
def test_the_us_is_allowed_for_an_active_dpf_certification(
    table: AdequacyTable, until: date
) -> None:
    who = recipient("US", dpf_until=until)
    assert only(check_transfer(who, (), table, ON)) == (True, Mechanism.ADEQUACY, "2023/1795", None)


def test_the_us_is_denied_when_the_dpf_certification_ended(table: AdequacyTable) -> None:
    reason = denial(check_transfer(recipient("US", dpf_until=ON - DAY), (), table, ON))
    assert reason.startswith("US: ")
    assert "Data Privacy Framework certification ended on 2026-03-01" in reason


def test_the_us_is_denied_without_dpf_certification(table: AdequacyTable) -> None:
    reason = denial(check_transfer(recipient("US"), (), table, ON))
    assert "Data Privacy Framework list" in reason
    assert "no standard contractual clauses" in reason


def test_the_us_without_dpf_is_allowed_under_a_valid_scc(table: AdequacyTable) -> None:
    who = recipient("US", dpf_until=ON - DAY, sccs=(scc(2),))
    assert only(check_transfer(who, (), table, ON))[1] is Mechanism.SCC


def test_the_uk_is_adequate_until_27_december_2031_and_not_after(table: AdequacyTable) -> None:
    uk = recipient("GB")
    assert check_transfer(uk, (), table, date(2031, 12, 27)).allowed
    reason = denial(check_transfer(uk, (), table, date(2031, 12, 28)))
    assert "2021/1772 expired after 2031-12-27" in reason


def test_a_decision_does_not_apply_before_it_was_adopted(table: AdequacyTable) -> None:
    reason = denial(check_transfer(recipient("BR"), (), table, date(2026, 1, 25)))
    assert "2026/179 applies only from 2026-01-26" in reason


def test_japan_covers_the_private_sector_only(table: AdequacyTable) -> None:
    assert check_transfer(recipient("JP", kind=RecipientKind.INSURER), (), table, ON).allowed
    authority = recipient("JP", kind=RecipientKind.AUTHORITY)
    assert "private sector" in denial(check_transfer(authority, (), table, ON))


def test_korea_leaves_insurers_to_scc(table: AdequacyTable) -> None:
    insurer = recipient("KR", kind=RecipientKind.INSURER)
    assert "FSC" in denial(check_transfer(insurer, (), table, ON))
    with_scc = replace(insurer, scc_agreements=(scc(2),))
    assert only(check_transfer(with_scc, (), table, ON))[1] is Mechanism.SCC


def test_a_scope_without_a_rule_covers_nobody(
    table: AdequacyTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(check_module.SCOPE_RULES, Scope.FULL)
    reason = denial(check_transfer(recipient("CH"), (), table, ON))
    assert "scope full, for which the broker has no rule" in reason


# --- standard contractual clauses (Art. 46, Decision (EU) 2021/914) -----------------------


def test_a_controller_is_covered_by_module_1(table: AdequacyTable) -> None:
    who = recipient("IN", role=CONTROLLER, sccs=(scc(1, reference="SCC-M1"),))
    assert only(check_transfer(who, (), table, ON)) == (True, Mechanism.SCC, "SCC-M1", "TIA-7")


def test_a_processor_is_covered_by_module_2(table: AdequacyTable) -> None:
    who = recipient("IN", role=PROCESSOR, sccs=(scc(2, reference="SCC-M2"),))
    assert only(check_transfer(who, (), table, ON)) == (True, Mechanism.SCC, "SCC-M2", "TIA-7")


@pytest.mark.parametrize(
    ("role", "module", "needed"),
    [(CONTROLLER, 2, 1), (CONTROLLER, 3, 1), (PROCESSOR, 1, 2), (PROCESSOR, 4, 2)],
)
def test_the_wrong_module_is_denied(
    table: AdequacyTable, role: RecipientRole, module: int, needed: int
) -> None:
    who = recipient("IN", role=role, sccs=(scc(module),))
    reason = denial(check_transfer(who, (), table, ON))
    assert f"module {module} does not fit a {role} (needs module {needed})" in reason


@pytest.mark.parametrize("expires_on", [ON - DAY, ON])
def test_an_expired_scc_is_denied(table: AdequacyTable, expires_on: date) -> None:
    who = recipient("IN", sccs=(scc(expires_on=expires_on),))
    assert f"expired on {expires_on.isoformat()}" in denial(check_transfer(who, (), table, ON))


def test_an_scc_expiring_later_is_allowed(table: AdequacyTable) -> None:
    assert check_transfer(recipient("IN", sccs=(scc(expires_on=ON + DAY),)), (), table, ON).allowed


def test_an_scc_not_yet_signed_is_denied(table: AdequacyTable) -> None:
    who = recipient("IN", sccs=(scc(signed_on=ON + DAY),))
    assert "not signed until 2026-03-03" in denial(check_transfer(who, (), table, ON))
    signed_today = recipient("IN", sccs=(scc(signed_on=ON),))
    assert check_transfer(signed_today, (), table, ON).allowed


@pytest.mark.parametrize("tia", [None, "", "   "])
def test_an_scc_without_transfer_impact_assessment_is_denied(
    table: AdequacyTable, tia: str | None
) -> None:
    who = recipient("IN", sccs=(scc(tia_reference=tia),))
    assert "no transfer impact assessment" in denial(check_transfer(who, (), table, ON))


def test_a_transfer_impact_assessment_without_review_date_is_denied(table: AdequacyTable) -> None:
    who = recipient("IN", sccs=(scc(tia_review_due=None),))
    assert "has no review date" in denial(check_transfer(who, (), table, ON))


def test_an_overdue_transfer_impact_assessment_review_is_denied(table: AdequacyTable) -> None:
    who = recipient("IN", sccs=(scc(tia_review_due=ON - DAY),))
    assert "review overdue since 2026-03-01" in denial(check_transfer(who, (), table, ON))
    due_today = recipient("IN", sccs=(scc(tia_review_due=ON),))
    assert check_transfer(due_today, (), table, ON).allowed


@pytest.mark.parametrize("reference", ["", "  "])
def test_an_scc_without_reference_is_denied(table: AdequacyTable, reference: str) -> None:
    who = recipient("IN", sccs=(scc(reference=reference),))
    assert "SCC without a reference" in denial(check_transfer(who, (), table, ON))


def test_a_valid_scc_is_found_among_invalid_ones(table: AdequacyTable) -> None:
    agreements = (
        scc(1, reference="WRONG"),
        scc(expires_on=ON, reference="OLD"),
        scc(reference="OK"),
    )
    decision = check_transfer(recipient("IN", sccs=agreements), (), table, ON)
    assert only(decision)[2] == "OK"


def test_every_invalid_scc_is_named_in_the_reason(table: AdequacyTable) -> None:
    agreements = (scc(1, reference="WRONG"), scc(expires_on=ON, reference="OLD"))
    reason = denial(check_transfer(recipient("IN", sccs=agreements), (), table, ON))
    assert reason.startswith("IN: no valid transfer mechanism: no adequacy decision; ")
    assert "SCC WRONG: module 1" in reason
    assert "SCC OLD: expired" in reason


def test_an_adequate_country_prefers_adequacy_over_scc(table: AdequacyTable) -> None:
    who = recipient("CH", sccs=(scc(2),))
    assert only(check_transfer(who, (), table, ON))[1] is Mechanism.ADEQUACY


# --- mixed and unknown ----------------------------------------------------------------------


def test_one_failing_country_denies_the_whole_transfer(table: AdequacyTable) -> None:
    decision = check_transfer(recipient("NL", "CH", storage=("CN",)), ["DE"], table, ON)
    assert not decision.allowed
    by_country = {c.country: c for c in decision.countries}
    assert {c for c, d in by_country.items() if d.allowed} == {"CH", "DE", "NL"}
    (reason,) = decision.reasons
    assert reason.startswith("CN: no valid transfer mechanism")


@pytest.mark.parametrize("code", ["XX", "", "nl", "N", "NLD", "EU", " NL", "UK"])
def test_an_unknown_country_is_denied(table: AdequacyTable, code: str) -> None:
    who = recipient("NL", sccs=(scc(2),))
    decision = check_transfer(who, [code], table, ON)
    assert not decision.allowed
    (refused,) = [c for c in decision.countries if not c.allowed]
    assert (refused.country, refused.mechanism, refused.reason) == (
        code,
        None,
        "unknown country code",
    )
    assert decision.reasons[0].endswith(": unknown country code")


def test_the_summary_names_each_mechanism_for_the_audit(table: AdequacyTable) -> None:
    who = recipient("NL", "CH", storage=("IN",), sccs=(scc(2),))
    decision = check_transfer(who, (), table, ON)
    assert decision.allowed
    summary = decision.summary()
    assert summary["mechanisms"] == ["adequacy", "eea", "scc"]
    assert summary["reasons"] == []
    assert json.loads(json.dumps(summary)) == summary
    countries = {c["country"]: c for c in summary["countries"]}  # type: ignore[attr-defined]
    assert countries["IN"]["tia_reference"] == "TIA-7"
    assert countries["CH"]["reference"] == "2000/518/EC"


def test_the_check_imports_no_framework_and_no_database() -> None:
    probe = (
        "import sys, broker.transfer.check\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'aiohttp', 'sqlmodel', 'sqlalchemy', 'psycopg'})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""


# --- property: allowed means every country has its mechanism; a gap means denied ------------

EEA_CODES = ["NL", "DE", "IS", "LI", "NO", "FR"]
ADEQUATE_CODES = ["CH", "CA", "US", "GB", "JP", "KR", "IL", "BR", "AR"]
OTHER_CODES = ["CN", "IN", "RU", "SG", "AU", "ZA"]  # no adequacy decision in the table
GARBAGE = ["XX", "", "nl", "EU", "NLD", "u s", "ZZ"]
ALL_CODES = EEA_CODES + ADEQUATE_CODES + OTHER_CODES + GARBAGE

dates = st.dates(min_value=date(2018, 1, 1), max_value=date(2033, 12, 31))
# Days around the check date, boundaries first, so that valid and just-invalid both occur.
offsets = st.sampled_from([-1, 0, 1]) | st.integers(-1500, 1500)
country_sets = st.lists(st.sampled_from(ALL_CODES), max_size=5).map(tuple)


@st.composite
def cases(draw: st.DrawFn) -> tuple[Recipient, tuple[str, ...], date]:
    """A check date and a recipient whose SCC and DPF dates fall around it."""
    on = draw(dates)

    def near() -> date:
        return on + timedelta(days=draw(offsets))

    agreements = tuple(
        SccAgreement(
            reference=draw(st.text("ABC-123 ", max_size=8)),
            module=draw(st.integers(0, 5)),
            signed_on=near(),
            expires_on=near() if draw(st.booleans()) else None,
            tia_reference=draw(st.none() | st.sampled_from(["", " ", "TIA-1", "TIA-2"])),
            tia_review_due=near() if draw(st.booleans()) else None,
        )
        for _ in range(draw(st.integers(0, 3)))
    )
    who = Recipient(
        id="r",
        name="Recipient",
        kind=draw(st.sampled_from(RecipientKind)),
        legal_entity="Recipient Ltd",
        role=draw(st.sampled_from(RecipientRole)),
        headquarters_country=draw(st.sampled_from(ALL_CODES)),
        processing_countries=draw(country_sets),
        storage_countries=draw(country_sets),
        dpf_certified_until=near() if draw(st.booleans()) else None,
        scc_agreements=agreements,
    )
    return who, draw(country_sets), on


def fitting_scc(who: Recipient, on: date) -> bool:
    """An independent statement of a valid SCC under Decision (EU) 2021/914."""
    module = 1 if who.role is CONTROLLER else 2
    return any(
        a.module == module
        and a.signed_on <= on
        and (a.expires_on is None or on < a.expires_on)
        and bool(a.tia_reference and a.tia_reference.strip())
        and a.tia_review_due is not None
        and on <= a.tia_review_due
        for a in who.scc_agreements
    )


@settings(max_examples=400, deadline=None, database=None)
@given(case=cases())
def test_allowed_means_every_country_has_a_mechanism(
    table: AdequacyTable, case: tuple[Recipient, tuple[str, ...], date]
) -> None:
    who, contract, on = case
    decision = check_transfer(who, contract, table, on)
    destinations = {*who.processing_countries, *who.storage_countries, *contract}
    assert {c.country for c in decision.countries} == destinations

    for country in decision.countries:
        assert country.allowed == (country.reason is None)
        assert country.allowed == (country.mechanism is not None)
        if country.mechanism in (Mechanism.ADEQUACY, Mechanism.SCC):
            assert country.reference
        if country.mechanism is Mechanism.SCC:
            assert country.tia_reference
            assert country.tia_reference.strip()
            assert fitting_scc(who, on)
        if country.mechanism is Mechanism.EEA:
            assert country.country in EEA_CODES

    if decision.allowed:
        assert decision.countries
        assert decision.reasons == ()
    else:
        assert decision.reasons

    if any(code in GARBAGE for code in destinations):
        assert not decision.allowed
    if not fitting_scc(who, on) and any(code in OTHER_CODES for code in destinations):
        assert not decision.allowed
    if destinations and destinations <= set(EEA_CODES):
        assert decision.allowed
