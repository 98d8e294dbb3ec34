"""What an eligibility preview may answer, as pure functions.

Before a customer signs up, a recipient may see which data the vehicle *can*
provide, never the data itself (the privacy notice). The answer is the
contract's categories that the VIN's model can provide by its standard
equipment (:mod:`broker.domain.vehicle_models`): a function of the VIN string,
the model catalogue and the contract only. So it tells nobody whether the broker
stores the vehicle, holds data of it, or whether its owner switched location
off. An unknown or undecodable VIN answers like a model that provides nothing.

A recipient whose contract anonymises learns nothing about a single vehicle, so
it is refused before any VIN is decoded.
"""

from __future__ import annotations

from typing import Any

from broker.domain.contracts import Contract, ProtectionLevel
from broker.domain.vehicle_models import VehicleModels
from broker.policy.release import Reason


def check_single_vehicle(contract: Contract) -> list[Reason]:
    """Whether the contract's recipient may be told anything about one vehicle."""
    if contract.protection.level is ProtectionLevel.ANONYMISED:
        return [
            Reason(
                "anonymised_contract",
                "an anonymised contract's recipient learns nothing about a single vehicle",
            )
        ]
    return []


def eligible_categories(contract: Contract, models: VehicleModels, vin: str) -> tuple[str, ...]:
    """The contract's categories a vehicle with this VIN can provide, sorted."""
    return tuple(sorted(contract.category_ids & models.provides(vin)))


def answer_document(contract_id: str, categories: tuple[str, ...]) -> dict[str, Any]:
    """The answer as the recipient receives it."""
    return {"contract": contract_id, "eligible": bool(categories), "categories": list(categories)}
