"""The transfer-country check: no release unless every destination has a mechanism.

GDPR Chapter V (https://eur-lex.europa.eu/eli/reg/2016/679/oj): personal data
may leave the EEA only under an adequacy decision (Article 45) whose scope
covers the recipient, or under appropriate safeguards (Article 46): here the
standard contractual clauses of Commission Implementing Decision (EU) 2021/914
(https://eur-lex.europa.eu/eli/dec_impl/2021/914/oj), backed by a transfer
impact assessment that is kept under review.

Fail closed: an unknown country code, an unknown scope, a role without an SCC
module or an empty set of destinations is a denial, never a default allow.
This module is pure: no I/O, no web framework, no database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from broker.domain.parties import Recipient, RecipientKind, RecipientRole, SccAgreement
from broker.transfer.adequacy import AdequacyDecision, AdequacyTable, Scope

NO_COUNTRY = "no destination country known"

#: The car maker always exports as a controller; the module follows the recipient's role.
SCC_MODULE_FOR_ROLE: Mapping[RecipientRole, int] = {
    RecipientRole.INDEPENDENT_CONTROLLER: 1,  # controller to controller
    RecipientRole.PROCESSOR: 2,  # controller to processor
}


class Mechanism(StrEnum):
    EEA = "eea"
    ADEQUACY = "adequacy"
    SCC = "scc"


@dataclass(frozen=True)
class CountryDecision:
    """Whether data may go to one country, and under which mechanism, or why not."""

    country: str
    allowed: bool
    mechanism: Mechanism | None = None
    reference: str | None = None  # adequacy decision id or SCC agreement reference
    tia_reference: str | None = None  # the SCC's transfer impact assessment
    reason: str | None = None  # why it was denied


@dataclass(frozen=True)
class TransferDecision:
    """The decision for every destination country of one release."""

    countries: tuple[CountryDecision, ...]

    @property
    def allowed(self) -> bool:
        """True only when there is at least one country and every one is allowed."""
        return bool(self.countries) and all(c.allowed for c in self.countries)

    @property
    def reasons(self) -> tuple[str, ...]:
        """Each denial, naming its country."""
        if not self.countries:
            return (NO_COUNTRY,)
        return tuple(f"{_name(c.country)}: {c.reason}" for c in self.countries if not c.allowed)

    @property
    def mechanisms(self) -> frozenset[Mechanism]:
        return frozenset(c.mechanism for c in self.countries if c.mechanism is not None)

    def audit_fields(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The audit entry's destination countries and mechanisms (``scc:<reference>``)."""
        countries = sorted({c.country for c in self.countries})
        mechanisms = sorted(
            {
                f"{c.mechanism}{f':{c.reference}' if c.reference else ''}"
                for c in self.countries
                if c.mechanism is not None
            }
        )
        return tuple(countries), tuple(mechanisms)

    def summary(self) -> dict[str, object]:
        """A JSON-ready account for the audit entry: the mechanism of each country."""
        return {
            "allowed": self.allowed,
            "mechanisms": sorted(self.mechanisms),
            "countries": [
                {
                    "country": c.country,
                    "allowed": c.allowed,
                    "mechanism": c.mechanism,
                    "reference": c.reference,
                    "tia_reference": c.tia_reference,
                    "reason": c.reason,
                }
                for c in self.countries
            ],
            "reasons": list(self.reasons),
        }


def check_transfer(
    recipient: Recipient,
    contract_countries: Iterable[str],
    table: AdequacyTable,
    on: date,
) -> TransferDecision:
    """Decide whether ``recipient`` may receive data on day ``on``.

    The destinations are the recipient's processing and storage countries and
    the contract's processing countries. Each one is allowed by, in order: the
    EEA; an adequacy decision in force whose scope covers the recipient; a
    valid SCC agreement of the right module with a current transfer impact
    assessment. Anything else is denied with its reason.
    """
    if isinstance(contract_countries, str):
        raise TypeError("contract_countries is a collection of country codes, not one string")
    if isinstance(on, datetime):
        raise TypeError("on is a calendar date, not a datetime")
    destinations = {
        *recipient.processing_countries,
        *recipient.storage_countries,
        *contract_countries,
    }
    return TransferDecision(
        tuple(_check_country(recipient, c, table, on) for c in sorted(destinations, key=str))
    )


def _check_country(
    recipient: Recipient, country: str, table: AdequacyTable, on: date
) -> CountryDecision:
    if not table.is_known_country(country):
        return CountryDecision(str(country), False, reason="unknown country code")
    if table.is_eea(country):
        return CountryDecision(country, True, Mechanism.EEA)
    why_not: list[str] = []
    for decision in table.decisions_for(country):
        refusal = _adequacy_refusal(decision, recipient, on)
        if refusal is None:
            return CountryDecision(country, True, Mechanism.ADEQUACY, reference=decision.id)
        why_not.append(refusal)
    if not recipient.scc_agreements:
        why_not.append("no standard contractual clauses")
    for agreement in recipient.scc_agreements:
        refusal = _scc_refusal(agreement, recipient.role, on)
        if refusal is None:
            return CountryDecision(
                country,
                True,
                Mechanism.SCC,
                reference=agreement.reference,
                tia_reference=agreement.tia_reference,
            )
        why_not.append(refusal)
    if not table.decisions_for(country):
        why_not.insert(0, "no adequacy decision")
    return CountryDecision(
        country, False, reason="no valid transfer mechanism: " + "; ".join(why_not)
    )


def _name(country: str) -> str:
    """The country code as written, quoted when it is empty or not two letters."""
    return country if len(country) == 2 and country.isalpha() else repr(country)


# --- Article 45: adequacy decisions and their scope -------------------------------------


def _adequacy_refusal(decision: AdequacyDecision, recipient: Recipient, on: date) -> str | None:
    """None when ``decision`` allows the transfer; otherwise why it does not."""
    label = f"adequacy decision {decision.id}"
    if on < decision.valid_from:
        return f"{label} applies only from {decision.valid_from.isoformat()}"
    if decision.valid_until is not None and on > decision.valid_until:
        return f"{label} expired after {decision.valid_until.isoformat()}"
    rule = SCOPE_RULES.get(decision.scope)
    if rule is None:
        return f"{label} has scope {decision.scope!s}, for which the broker has no rule"
    refusal = rule(recipient, on)
    return None if refusal is None else f"{label}: {refusal}"


ScopeRule = Callable[[Recipient, date], str | None]


def _full(recipient: Recipient, on: date) -> str | None:
    return None


def _private_sector(recipient: Recipient, on: date) -> str | None:
    if recipient.kind is RecipientKind.AUTHORITY:
        return "covers the private sector only, and the recipient is an authority"
    return None


def _pipeda(recipient: Recipient, on: date) -> str | None:
    # Assumption: a recipient is subject to PIPEDA when it is a commercial
    # organisation (any kind but an authority) with its headquarters in Canada,
    # whether it receives as independent controller or as processor. Anyone
    # else in Canada needs standard contractual clauses.
    if recipient.headquarters_country != "CA":
        return "covers only organisations subject to PIPEDA; the recipient is not based in Canada"
    if recipient.kind is RecipientKind.AUTHORITY:
        return "covers only commercial organisations (PIPEDA); the recipient is an authority"
    return None


def _dpf(recipient: Recipient, on: date) -> str | None:
    until = recipient.dpf_certified_until
    if until is None:
        return "covers only organisations on the Data Privacy Framework list; the recipient is not"
    if until < on:
        return f"the recipient's Data Privacy Framework certification ended on {until.isoformat()}"
    return None


def _automated(recipient: Recipient, on: date) -> str | None:
    return None  # every release by the broker is an automated transfer


def _pipa(recipient: Recipient, on: date) -> str | None:
    # Credit information processed by entities the Financial Services Commission
    # supervises is outside the Korean decision; insurers may be such entities.
    if recipient.kind is RecipientKind.INSURER:
        return "excludes credit information processed by FSC-supervised entities such as insurers"
    return None


#: The rule for each scope; a scope missing here covers nobody.
SCOPE_RULES: Mapping[Scope, ScopeRule] = {
    Scope.FULL: _full,
    Scope.PRIVATE_SECTOR: _private_sector,
    Scope.COMMERCIAL_ORGANISATIONS_SUBJECT_TO_PIPEDA: _pipeda,
    Scope.DPF_CERTIFIED_ORGANISATIONS: _dpf,
    Scope.AUTOMATED_TRANSFERS: _automated,
    Scope.PIPA_EXCEPT_FSC_CREDIT_INFORMATION: _pipa,
}


# --- Article 46: standard contractual clauses, Decision (EU) 2021/914 -------------------


def _scc_refusal(agreement: SccAgreement, role: RecipientRole, on: date) -> str | None:
    """None when ``agreement`` covers the transfer on ``on``; otherwise why it does not.

    An agreement that expires on a day no longer covers that day; a transfer
    impact assessment whose review is due on a day still covers that day.
    """
    if not agreement.reference.strip():
        return "SCC without a reference"
    label = f"SCC {agreement.reference}"
    needed = SCC_MODULE_FOR_ROLE.get(role)
    if needed is None:
        return f"{label}: no SCC module is known for the role {role!s}"
    if agreement.module != needed:
        return f"{label}: module {agreement.module} does not fit a {role!s} (needs module {needed})"
    if on < agreement.signed_on:
        return f"{label}: not signed until {agreement.signed_on.isoformat()}"
    if agreement.expires_on is not None and on >= agreement.expires_on:
        return f"{label}: expired on {agreement.expires_on.isoformat()}"
    if agreement.tia_reference is None or not agreement.tia_reference.strip():
        return f"{label}: no transfer impact assessment"
    if agreement.tia_review_due is None:
        return f"{label}: transfer impact assessment has no review date"
    if agreement.tia_review_due < on:
        return (
            f"{label}: transfer impact assessment review overdue since "
            f"{agreement.tia_review_due.isoformat()}"
        )
    return None
