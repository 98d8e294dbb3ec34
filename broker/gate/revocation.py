"""Revocation listeners: what every channel must do the moment a grant ends.

Each channel registers a listener (refuse its tokens, drop its queued
deliveries, terminate its agreements). Ending a grant runs them all inside the
same transaction as the state change: if one fails, the grant does not end
either, so a revocation can never be half-applied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from broker.domain.grants import Grant, GrantState


@dataclass(frozen=True)
class GrantEnded:
    grant: Grant  # as it is now (terminal state)
    previous_state: GrantState
    at: datetime
    reason: str


RevocationListener = Callable[[Session, GrantEnded], object]


class RevocationListeners:
    """The registry. Listeners run in registration order."""

    def __init__(self) -> None:
        self._listeners: list[tuple[str, RevocationListener]] = []

    def register(self, name: str, listener: RevocationListener) -> None:
        if any(existing == name for existing, _ in self._listeners):
            raise ValueError(f"a revocation listener named {name!r} is already registered")
        self._listeners.append((name, listener))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self._listeners)

    def run(self, session: Session, ended: GrantEnded) -> None:
        for _, listener in self._listeners:
            listener(session, ended)
