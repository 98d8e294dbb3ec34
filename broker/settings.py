"""Settings, read from the environment in one place.

Every setting has a default that runs the broker on an embedded SQLite file
with no other service. ``Settings.from_env`` is the only reader of
``os.environ`` in the broker.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from broker.errors import ConfigurationError

DEFAULT_DATABASE_URL = "sqlite:///var/broker.sqlite3"


def _contracts_dir_default() -> Path:
    """The packaged copy of ``contracts/`` or, in a checkout, the folder itself."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_contracts", here.parent / "contracts"):
        if (candidate / "categories.json").is_file():
            return candidate
    return here.parent / "contracts"


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    contracts_dir: Path = field(default_factory=_contracts_dir_default)
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""
    max_request_bytes: int = 1024 * 1024
    max_ingest_bytes: int = 32 * 1024 * 1024
    retention_overrides: str = ""
    purge_interval_seconds: int = 3600
    mqtt_url: str = ""
    mqtt_topic_prefix: str = "vehicles"
    mqtt_client_id: str = "vehicle-data-broker-ingest"
    log_level: str = "INFO"
    log_format: str = "json"
    auto_migrate: bool = True
    dpop_nonce: bool = False  # require server nonces in DPoP proofs (RFC 9449 section 8)
    master_key: str | None = field(default=None, repr=False)
    master_key_file: Path = Path("var/master.key")
    audit_key_file: Path = Path("var/audit-signing.key")
    oauth_keys_dir: Path = Path("var/oauth-keys")
    webhook_allow_http_loopback: bool = False  # development only: http:// to 127.0.0.1/::1
    webhook_worker: bool = True  # deliver webhooks inside ``broker serve``
    webhook_lease_seconds: int = 60
    webhook_concurrency: int = 16
    webhook_timeout_seconds: float = 10.0
    #: Eligibility answers per recipient per (UTC) day, shared by every process.
    eligibility_quota: int = 100

    @property
    def issuer(self) -> str:
        """The broker's public base URL (no trailing slash)."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        base = cls()
        try:
            return replace(
                base,
                database_url=env.get("BROKER_DATABASE_URL", base.database_url),
                contracts_dir=Path(env.get("BROKER_CONTRACTS_DIR", str(base.contracts_dir))),
                host=env.get("BROKER_HOST", base.host),
                port=int(env.get("BROKER_PORT", base.port)),
                public_url=env.get("BROKER_PUBLIC_URL", base.public_url),
                max_request_bytes=int(env.get("BROKER_MAX_REQUEST_BYTES", base.max_request_bytes)),
                max_ingest_bytes=int(env.get("BROKER_MAX_INGEST_BYTES", base.max_ingest_bytes)),
                retention_overrides=env.get("BROKER_RETENTION", base.retention_overrides),
                mqtt_url=env.get("BROKER_MQTT_URL", base.mqtt_url),
                mqtt_topic_prefix=env.get("BROKER_MQTT_TOPIC_PREFIX", base.mqtt_topic_prefix),
                mqtt_client_id=env.get("BROKER_MQTT_CLIENT_ID", base.mqtt_client_id),
                purge_interval_seconds=int(
                    env.get("BROKER_PURGE_INTERVAL", base.purge_interval_seconds)
                ),
                log_level=env.get("BROKER_LOG_LEVEL", base.log_level).upper(),
                log_format=env.get("BROKER_LOG_FORMAT", base.log_format),
                auto_migrate=_flag(env.get("BROKER_AUTO_MIGRATE"), base.auto_migrate),
                dpop_nonce=_flag(env.get("BROKER_DPOP_NONCE"), base.dpop_nonce),
                master_key=env.get("BROKER_MASTER_KEY") or None,
                master_key_file=Path(env.get("BROKER_MASTER_KEY_FILE", str(base.master_key_file))),
                audit_key_file=Path(env.get("BROKER_AUDIT_KEY_FILE", str(base.audit_key_file))),
                oauth_keys_dir=Path(env.get("BROKER_OAUTH_KEYS_DIR", str(base.oauth_keys_dir))),
                webhook_allow_http_loopback=_flag(
                    env.get("BROKER_WEBHOOK_ALLOW_HTTP_LOOPBACK"), base.webhook_allow_http_loopback
                ),
                webhook_worker=_flag(env.get("BROKER_WEBHOOK_WORKER"), base.webhook_worker),
                webhook_lease_seconds=int(
                    env.get("BROKER_WEBHOOK_LEASE_SECONDS", base.webhook_lease_seconds)
                ),
                webhook_concurrency=int(
                    env.get("BROKER_WEBHOOK_CONCURRENCY", base.webhook_concurrency)
                ),
                webhook_timeout_seconds=float(
                    env.get("BROKER_WEBHOOK_TIMEOUT", base.webhook_timeout_seconds)
                ),
                eligibility_quota=int(env.get("BROKER_ELIGIBILITY_QUOTA", base.eligibility_quota)),
            )
        except ValueError as exc:
            raise ConfigurationError(f"invalid setting: {exc}") from exc


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected a boolean, got {value!r}")
