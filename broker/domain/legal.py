"""Legal bases (GDPR Art. 6(1)) and the ways a grant becomes active.

https://eur-lex.europa.eu/eli/reg/2016/679/oj (Art. 6, 7, 21)
"""

from __future__ import annotations

from enum import StrEnum


class LegalBasis(StrEnum):
    """GDPR Art. 6(1)(a)-(f), written as the article's point."""

    CONSENT = "6(1)(a)"
    CONTRACT = "6(1)(b)"
    LEGAL_OBLIGATION = "6(1)(c)"
    VITAL_INTERESTS = "6(1)(d)"
    PUBLIC_TASK = "6(1)(e)"
    LEGITIMATE_INTEREST = "6(1)(f)"


class Activation(StrEnum):
    """How a grant under a contract becomes active, and who may end it."""

    CONSENT = "consent"  # the customer approves, and may withdraw (Art. 7(3))
    CONTRACT = "contract"  # the customer's service contract; ends with it
    LEGITIMATE_INTEREST = "legitimate_interest"  # active by default; the customer may object
    LEGAL_OBLIGATION = "legal_obligation"  # shown to the customer; no objection
    FLEET_CLEARANCE = "fleet_clearance"  # bounded by the vehicle's fleet membership; the
    # owner may object when the clearance rests on legitimate interest


#: Which activations each legal basis admits. Anything else is an invalid contract.
ACTIVATIONS_BY_BASIS: dict[LegalBasis, frozenset[Activation]] = {
    LegalBasis.CONSENT: frozenset({Activation.CONSENT}),
    LegalBasis.CONTRACT: frozenset({Activation.CONTRACT, Activation.FLEET_CLEARANCE}),
    LegalBasis.LEGAL_OBLIGATION: frozenset({Activation.LEGAL_OBLIGATION}),
    LegalBasis.VITAL_INTERESTS: frozenset({Activation.LEGAL_OBLIGATION}),
    LegalBasis.PUBLIC_TASK: frozenset({Activation.LEGAL_OBLIGATION}),
    LegalBasis.LEGITIMATE_INTEREST: frozenset(
        {Activation.LEGITIMATE_INTEREST, Activation.FLEET_CLEARANCE}
    ),
}


def admits_objection(basis: LegalBasis, activation: Activation) -> bool:
    """Whether the data subject may object (GDPR Art. 21(1)): processing based on a
    legitimate interest, a fleet clearance included; never a legal obligation or a
    service contract (which end by withdrawal or with the contract)."""
    return basis is LegalBasis.LEGITIMATE_INTEREST and activation in (
        Activation.LEGITIMATE_INTEREST,
        Activation.FLEET_CLEARANCE,
    )
