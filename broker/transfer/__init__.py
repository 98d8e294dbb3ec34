"""The transfer-country check: GDPR Chapter V, transfers outside the EEA.

Step five of the flow (ingest -> store -> grant and contract policy ->
protection -> **transfer-country check** -> audit -> channel). Data leaves for a
country only inside the EEA, under an adequacy decision (Article 45,
``adequacy``) or under standard contractual clauses of Decision (EU) 2021/914
with a current transfer impact assessment (Article 46, ``check``).
https://eur-lex.europa.eu/eli/reg/2016/679/oj
"""

from broker.transfer.adequacy import AdequacyDecision, AdequacyTable, Scope
from broker.transfer.check import (
    CountryDecision,
    Mechanism,
    TransferDecision,
    check_transfer,
)

__all__ = [
    "AdequacyDecision",
    "AdequacyTable",
    "CountryDecision",
    "Mechanism",
    "Scope",
    "TransferDecision",
    "check_transfer",
]
