"""The environment of a ``broker ...`` subprocess in tests (importable as ``processes``):
this process's environment without any ``BROKER_*`` setting, plus the ones given."""

from __future__ import annotations

import os
from pathlib import Path

from broker.settings import Settings


def broker_env(database_url: str, keys: Path, **settings: str) -> dict[str, str]:
    """A broker on ``database_url`` whose key files live in the folder ``keys``."""
    return _clean() | {
        "BROKER_DATABASE_URL": database_url,
        "BROKER_MASTER_KEY_FILE": str(keys / "master.key"),
        "BROKER_AUDIT_KEY_FILE": str(keys / "audit.key"),
        "BROKER_OAUTH_KEYS_DIR": str(keys / "oauth-keys"),
        **settings,
    }


def env_of(settings: Settings, **overrides: str) -> dict[str, str]:
    """A process sharing an in-test broker's database, keys and contracts."""
    return _clean() | {
        "BROKER_DATABASE_URL": settings.database_url,
        "BROKER_MASTER_KEY_FILE": str(settings.master_key_file),
        "BROKER_AUDIT_KEY_FILE": str(settings.audit_key_file),
        "BROKER_OAUTH_KEYS_DIR": str(settings.oauth_keys_dir),
        "BROKER_CONTRACTS_DIR": str(settings.contracts_dir),
        **overrides,
    }


def _clean() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
