"""The adequacy table (GDPR Art. 45): its content, its validation, and that it is data."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from broker.domain.parties import Recipient, RecipientKind, RecipientRole
from broker.errors import ConfigurationError, InvalidDocument
from broker.transfer import AdequacyTable, Mechanism, Scope, check_transfer

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"
SCHEMAS = CONTRACTS / "schemas"
TABLE_FILE = CONTRACTS / "adequacy.json"
ON = date(2026, 3, 2)

EU_27 = [
    *("AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU"),
    *("IE", "IT", "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK"),
]


@pytest.fixture(scope="module")
def table() -> AdequacyTable:
    return AdequacyTable.load(TABLE_FILE)


@pytest.fixture
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(TABLE_FILE.read_text(encoding="utf-8"))
    return loaded


def load_copy(tmp_path: Path, document: dict[str, Any]) -> AdequacyTable:
    path = tmp_path / "adequacy.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return AdequacyTable.load(path, SCHEMAS)


def index_of(document: dict[str, Any], country: str) -> int:
    return next(i for i, row in enumerate(document["decisions"]) if row.get("country") == country)


def recipient_in(country: str) -> Recipient:
    return Recipient(
        id="r1",
        name="Recipient",
        kind=RecipientKind.SERVICE_PARTNER,
        legal_entity="Recipient Ltd",
        role=RecipientRole.PROCESSOR,
        headquarters_country=country,
        processing_countries=(country,),
        storage_countries=(country,),
    )


# --- content -----------------------------------------------------------------------------


def test_the_table_names_its_version_and_the_eea(table: AdequacyTable) -> None:
    assert table.version >= 1
    assert isinstance(table.updated, date)
    assert table.eea == frozenset([*EU_27, "IS", "LI", "NO"])


@pytest.mark.parametrize(
    ("country", "reference", "scope"),
    [
        ("AD", "2010/625/EU", Scope.FULL),
        ("AR", "2003/490/EC", Scope.FULL),
        ("BR", "2026/179", Scope.FULL),
        ("CA", "2002/2/EC", Scope.COMMERCIAL_ORGANISATIONS_SUBJECT_TO_PIPEDA),
        ("FO", "2010/146/EU", Scope.FULL),
        ("GG", "2003/821/EC", Scope.FULL),
        ("IL", "2011/61/EU", Scope.AUTOMATED_TRANSFERS),
        ("IM", "2004/411/EC", Scope.FULL),
        ("JP", "2019/419", Scope.PRIVATE_SECTOR),
        ("JE", "2008/393/EC", Scope.FULL),
        ("NZ", "2013/65/EU", Scope.FULL),
        ("KR", "2022/254", Scope.PIPA_EXCEPT_FSC_CREDIT_INFORMATION),
        ("CH", "2000/518/EC", Scope.FULL),
        ("GB", "2021/1772", Scope.FULL),
        ("US", "2023/1795", Scope.DPF_CERTIFIED_ORGANISATIONS),
        ("UY", "2012/484/EU", Scope.FULL),
    ],
)
def test_each_adequate_country_has_its_decision(
    table: AdequacyTable, country: str, reference: str, scope: Scope
) -> None:
    (decision,) = table.decisions_for(country)
    assert (decision.id, decision.scope, decision.country) == (reference, scope, country)
    assert decision.in_force_on(ON)


def test_the_uk_decision_runs_until_27_december_2031(table: AdequacyTable) -> None:
    (uk,) = table.decisions_for("GB")
    assert uk.valid_until == date(2031, 12, 27)
    assert uk.in_force_on(date(2031, 12, 27))
    assert not uk.in_force_on(date(2031, 12, 28))


def test_the_european_patent_organisation_is_an_organisation_not_a_country(
    table: AdequacyTable,
) -> None:
    (epo,) = table.decisions_for_organisation("EPO")
    assert (epo.id, epo.country, epo.scope) == ("2025/1382", None, Scope.FULL)
    assert all(d.country is not None for d in table.decisions if d.organisation is None)


def test_lookups_are_exact(table: AdequacyTable) -> None:
    assert table.is_eea("NL")
    assert not table.is_eea("nl")
    assert not table.is_eea("CH")
    assert table.decisions_for("ch") == ()
    assert table.decisions_for("CN") == ()
    assert table.is_known_country("CN")
    for code in ("XX", "", "nl", "NLD", "EU", None, 31):
        assert not table.is_known_country(code)


def test_the_table_is_frozen(table: AdequacyTable) -> None:
    with pytest.raises(AttributeError):
        table.version = 99  # type: ignore[misc]
    with pytest.raises(AttributeError):
        table.decisions[0].valid_until = None  # type: ignore[misc]


# --- the table is data: edit a row, the decision flips -----------------------------------


def test_expiring_japan_in_the_file_denies_japan(tmp_path: Path, document: dict[str, Any]) -> None:
    japan = recipient_in("JP")
    before = check_transfer(japan, (), load_copy(tmp_path, document), ON)
    assert before.allowed
    assert before.countries[0].reference == "2019/419"

    document["decisions"][index_of(document, "JP")]["valid_until"] = "2025-12-31"
    after = check_transfer(japan, (), load_copy(tmp_path, document), ON)
    assert not after.allowed
    assert "2019/419 expired after 2025-12-31" in after.reasons[0]


def test_removing_switzerland_from_the_file_denies_switzerland(
    tmp_path: Path, document: dict[str, Any]
) -> None:
    del document["decisions"][index_of(document, "CH")]
    decision = check_transfer(recipient_in("CH"), (), load_copy(tmp_path, document), ON)
    assert not decision.allowed
    assert decision.reasons[0].startswith("CH: no valid transfer mechanism: no adequacy decision")


def test_adding_a_decision_to_the_file_allows_that_country(
    tmp_path: Path, document: dict[str, Any]
) -> None:
    row = {"id": "2030/1", "country": "SG", "name": "Singapore", "scope": "full"}
    document["decisions"].append({**row, "valid_from": "2026-01-01"})
    decision = check_transfer(recipient_in("SG"), (), load_copy(tmp_path, document), ON)
    assert decision.allowed
    assert decision.countries[0].mechanism is Mechanism.ADEQUACY
    assert decision.countries[0].reference == "2030/1"


# --- validation: every problem with its JSON path ----------------------------------------

Edit = Callable[[dict[str, Any]], None]


def _set(path: tuple[str | int, ...], value: Any) -> Edit:
    def edit(document: dict[str, Any]) -> None:
        target: Any = document
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return edit


def _delete(path: tuple[str | int, ...]) -> Edit:
    def edit(document: dict[str, Any]) -> None:
        target: Any = document
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return edit


def _append(row: dict[str, Any]) -> Edit:
    return lambda document: document["decisions"].append(row)


FIRST = ("decisions", 0)
NEW_ROW = {"name": "x", "scope": "full", "valid_from": "2026-01-01"}
ADDED = "$.decisions[17]"  # the table has 17 decisions: an added row is the 18th

MALFORMED = [
    pytest.param(_set((*FIRST, "country"), "ad"), "$.decisions[0].country", id="lower-case"),
    pytest.param(_set((*FIRST, "country"), "XX"), "$.decisions[0].country", id="unassigned"),
    pytest.param(_set((*FIRST, "scope"), "everything"), "$.decisions[0].scope", id="scope"),
    pytest.param(_set((*FIRST, "valid_from"), "2023-02-30"), "$.decisions[0].valid_from", id="day"),
    pytest.param(_set((*FIRST, "valid_until"), "soon"), "$.decisions[0].valid_until", id="date"),
    pytest.param(
        _set((*FIRST, "valid_until"), "2000-01-01"), "$.decisions[0].valid_until", id="ends-early"
    ),
    pytest.param(_set((*FIRST, "id"), "Andorra"), "$.decisions[0].id", id="reference"),
    pytest.param(_delete((*FIRST, "country")), "$.decisions[0]", id="no-country"),
    pytest.param(_set((*FIRST, "organisation"), "EPO"), "$.decisions[0]", id="country-and-org"),
    pytest.param(_set((*FIRST, "allowed"), True), "$.decisions[0]", id="unknown-field"),
    pytest.param(_delete((*FIRST, "scope")), "$.decisions[0]", id="no-scope"),
    pytest.param(_delete(("version",)), "$", id="no-version"),
    pytest.param(_set(("version",), "1"), "$.version", id="version-text"),
    pytest.param(_set(("format",), "something-else"), "$.format", id="format"),
    pytest.param(_set(("eea", 0), "XX"), "$.eea[0]", id="eea-code"),
    pytest.param(
        _append({**NEW_ROW, "id": "2010/625/EU", "country": "SG"}), f"{ADDED}.id", id="repeated-id"
    ),
    pytest.param(
        _append({**NEW_ROW, "id": "2030/2", "country": "NL"}), f"{ADDED}.country", id="eea-row"
    ),
]


@pytest.mark.parametrize(("edit", "path"), MALFORMED)
def test_a_malformed_table_is_rejected_with_its_json_path(
    tmp_path: Path, document: dict[str, Any], edit: Edit, path: str
) -> None:
    broken = copy.deepcopy(document)
    edit(broken)
    with pytest.raises(InvalidDocument) as caught:
        load_copy(tmp_path, broken)
    assert path in [error["path"] for error in caught.value.errors]
    assert caught.value.code == "invalid_document"
    assert all(error["message"] for error in caught.value.errors)


def test_a_decision_with_country_and_organisation_says_so(
    tmp_path: Path, document: dict[str, Any]
) -> None:
    document["decisions"][0]["organisation"] = "EPO"
    with pytest.raises(InvalidDocument) as caught:
        load_copy(tmp_path, document)
    assert caught.value.errors == [
        {
            "path": "$.decisions[0]",
            "message": "A decision names either a country or an organisation, not both.",
        }
    ]


@pytest.mark.parametrize(
    "text",
    ["{", '{"version": 1, "version": 2}', "[]", "", '{"version": NaN}'],
    ids=["truncated", "repeated key", "array", "empty", "NaN"],
)
def test_a_file_that_is_not_a_table_is_rejected(tmp_path: Path, text: str) -> None:
    path = tmp_path / "adequacy.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidDocument) as caught:
        AdequacyTable.load(path, SCHEMAS)
    assert caught.value.errors[0]["path"] == "$"


def test_a_missing_file_or_schema_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        AdequacyTable.load(tmp_path / "absent.json", SCHEMAS)
    with pytest.raises(ConfigurationError):
        AdequacyTable.load(TABLE_FILE, tmp_path)
