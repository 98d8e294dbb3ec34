"""Signing secrets of webhook subscriptions, encrypted at rest under the broker's webhook key.

A subscription's secrets are ``{"current": ..., "previous": ...}``: after a
rotation the previous secret keeps signing (alongside the new one) until the
subscription's ``previous_until``, so the recipient can switch without a gap.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from broker.store.tables import WebhookSubscriptionRow
from broker.vault.vault import Vault

OWNER = "broker:webhook-secrets"


def _aad(subscription_id: str) -> bytes:
    return f"webhook-secrets:{subscription_id}".encode()


class SecretBox:
    def __init__(self, vault: Vault) -> None:
        self.vault = vault

    def seal(
        self, session: Session, subscription_id: str, current: str, previous: str | None = None
    ) -> bytes:
        value = {"current": current, "previous": previous}
        return self.vault.encrypt_json(session, OWNER, value, _aad(subscription_id))

    def _open(self, session: Session, sub: WebhookSubscriptionRow) -> dict[str, str | None]:
        value = self.vault.decrypt_json(session, OWNER, sub.secrets, _aad(sub.id))
        if not isinstance(value, dict) or not isinstance(value.get("current"), str):
            raise LookupError("the subscription's secrets cannot be read")
        return value

    def current(self, session: Session, sub: WebhookSubscriptionRow) -> str:
        return str(self._open(session, sub)["current"])

    def signing(self, session: Session, sub: WebhookSubscriptionRow, now: datetime) -> list[str]:
        """The secrets that sign now: the current one, and the previous during the overlap."""
        value = self._open(session, sub)
        keys = [str(value["current"])]
        previous = value.get("previous")
        if previous and sub.previous_until is not None and now < sub.previous_until:
            keys.append(previous)
        return keys
