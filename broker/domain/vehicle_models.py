"""Vehicle models, what their equipment can provide, and the VIN decoding that finds them.

A VIN (ISO 3779) begins with the World Manufacturer Identifier (WMI, ISO 3780:
characters 1 to 3), followed by the vehicle descriptor section (VDS, characters
4 to 9) in which each maker puts its own model code. :meth:`VehicleModels.decode`
reads the maker from the WMI and the model from the code at the position that
maker uses, as a workshop's VIN decoder does. The answer depends on the VIN
string and the catalogue only: whether the broker stores the vehicle, its data
or its owner's settings plays no part. The check digit (character 9 in North
America) is not required in Europe and is not checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from broker.domain.contracts import LocalizedText

VIN_PATTERN = re.compile(r"[A-HJ-NPR-Z0-9]{17}")


class Powertrain(StrEnum):
    BATTERY_ELECTRIC = "battery-electric"
    PLUG_IN_HYBRID = "plug-in-hybrid"
    HYBRID = "hybrid"
    COMBUSTION = "combustion"


@dataclass(frozen=True)
class Equipment:
    """Something a vehicle is fitted with, and the categories it collects."""

    id: str
    name: LocalizedText
    provides: frozenset[str]
    powertrains: frozenset[Powertrain]  # empty: fits any powertrain

    def fits(self, powertrain: Powertrain) -> bool:
        return not self.powertrains or powertrain in self.powertrains


@dataclass(frozen=True)
class Make:
    """A car maker by its WMI, and where its VINs carry the model code (1-based)."""

    wmi: str
    name: str
    code_position: int
    code_length: int

    def model_code(self, vin: str) -> str:
        start = self.code_position - 1
        return vin[start : start + self.code_length]


@dataclass(frozen=True)
class VehicleModel:
    id: str
    name: str
    wmi: str
    codes: frozenset[str]
    powertrain: Powertrain
    equipment: tuple[Equipment, ...]

    @property
    def provides(self) -> frozenset[str]:
        """Every category the model's standard equipment can provide."""
        return frozenset().union(*(e.provides for e in self.equipment))


class VehicleModels:
    """The model catalogue, looked up by VIN."""

    def __init__(self, version: int, makes: Iterable[Make], models: Iterable[VehicleModel]):
        self.version = version
        self._makes = {m.wmi: m for m in makes}
        self._models = tuple(models)
        self._by_code = {(m.wmi, code): m for m in self._models for code in m.codes}

    def __iter__(self) -> Iterator[VehicleModel]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def decode(self, vin: str) -> VehicleModel | None:
        """The model ``vin`` names, or ``None`` for a malformed VIN or an unknown model."""
        if not VIN_PATTERN.fullmatch(vin):
            return None
        make = self._makes.get(vin[:3])
        if make is None:
            return None
        return self._by_code.get((make.wmi, make.model_code(vin)))

    def provides(self, vin: str) -> frozenset[str]:
        """What a vehicle with this VIN can provide; nothing if its model is unknown."""
        model = self.decode(vin)
        return model.provides if model is not None else frozenset()
