"""The pseudonym keys of every (recipient, contract), derived once from the master key."""

from __future__ import annotations

import threading

from broker.protection.keys import Pseudonymiser


class Keyring:
    def __init__(self, master_key: bytes) -> None:
        self._master_key = master_key
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
