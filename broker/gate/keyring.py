"""Keys derived once from the master key: pseudonyms per (recipient, contract), cursors."""

from __future__ import annotations

import threading

from broker.protection.keys import Pseudonymiser
from broker.protection.sealing import Sealer


class Keyring:
    def __init__(self, master_key: bytes) -> None:
        self._master_key = master_key
        #: Seals the cursors handed to recipients; the same in every process (one master key).
        self.sealer = Sealer.from_master_key(master_key)
        self._cache: dict[tuple[str, str], Pseudonymiser] = {}
        self._lock = threading.Lock()

    def pseudonymiser(self, recipient_id: str, contract_id: str) -> Pseudonymiser:
        key = (recipient_id, contract_id)
        with self._lock:
            found = self._cache.get(key)
            if found is None:
                found = Pseudonymiser.for_contract(self._master_key, recipient_id, contract_id)
                self._cache[key] = found
            return found

    def vehicle_ref(self, vin: str) -> str:
        """The broker's own reference for a vehicle in the audit log (no clear VIN there)."""
        return "veh-" + self.pseudonymiser("broker", "audit").vehicle(vin)
