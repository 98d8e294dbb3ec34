"""`broker serve` with BROKER_MQTT_URL: records published over MQTT land in the store."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest
import sqlalchemy as sa
from worlds import COOPER, ROOT

from broker.audit.checkpoint import CheckpointSigner
from broker.clock import format_instant
from broker.protection.keys import generate_master_key

IN_CI = os.environ.get("CI", "").lower() == "true"


def publisher() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "mqtt_publish", ROOT / "examples" / "mqtt_publish.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3).close()
        return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_ingests_what_vehicles_publish_over_mqtt(database_url: str, tmp_path: Path) -> None:
    if not _reachable(1883):
        if IN_CI:
            pytest.fail("Mosquitto unreachable on 127.0.0.1:1883 (CI=true: must run)")
        pytest.skip("Mosquitto unreachable on 127.0.0.1:1883")
    (tmp_path / "master.key").write_text(generate_master_key())
    CheckpointSigner.generate(tmp_path / "audit.key")
    seed = subprocess.run(
        [sys.executable, "-m", "broker", "seed", str(ROOT / "examples" / "demo-seed.json")],
        env=_env(database_url, tmp_path, "unused"), cwd=ROOT, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert seed.returncode == 0, seed.stderr
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    port = _free_port()
    log_path = tmp_path / "serve.log"
    with (
        log_path.open("w") as log,
        subprocess.Popen(
            [sys.executable, "-m", "broker", "serve", "--port", str(port)],
            env=_env(database_url, tmp_path, prefix), cwd=ROOT, stdout=log,
            stderr=subprocess.STDOUT,
        ) as process,
    ):  # fmt: skip
        try:
            engine = sa.create_engine(
                database_url.replace("postgresql://", "postgresql+psycopg://")
            )
            _wait_for_subscription(log_path, process)
            records = [
                {
                    "record_id": f"mqtt-{prefix}-{i}",
                    "vin": COOPER,
                    "category": "vehicle.status",
                    "recorded_at": format_instant(datetime.now(UTC) - timedelta(minutes=i + 1)),
                    "data": {"mileage_km": 100.0 + i},
                }
                for i in range(5)
            ]
            sent = asyncio.run(
                publisher().publish_records(
                    records, host="127.0.0.1", port=1883, topic_prefix=prefix
                )
            )
            assert sent == 5
            found: list[str] = []
            for _ in range(200):
                with engine.connect() as conn:
                    found = list(
                        conn.execute(
                            sa.text("SELECT id FROM telemetry_record WHERE id LIKE :p"),
                            {"p": f"mqtt-{prefix}-%"},
                        ).scalars()
                    )
                if len(found) == 5 or process.poll() is not None:
                    break
                time.sleep(0.1)
            assert sorted(found) == sorted(r["record_id"] for r in records), log_path.read_text()
            engine.dispose()
        finally:
            process.terminate()
            process.wait(timeout=30)


def _wait_for_subscription(log_path: Path, process: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if "mqtt ingest subscribed" in log_path.read_text():
            return
        if process.poll() is not None:
            pytest.fail(f"broker serve exited: {log_path.read_text()}")
        time.sleep(0.1)
    pytest.fail(f"the MQTT connector never subscribed: {log_path.read_text()}")


def _env(database_url: str, keys: Path, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env.update(
        BROKER_DATABASE_URL=database_url,
        BROKER_MASTER_KEY_FILE=str(keys / "master.key"),
        BROKER_AUDIT_KEY_FILE=str(keys / "audit.key"),
        BROKER_OAUTH_KEYS_DIR=str(keys / "oauth-keys"),
        BROKER_MQTT_URL="mqtt://127.0.0.1:1883",
        BROKER_MQTT_TOPIC_PREFIX=prefix,
        BROKER_MQTT_CLIENT_ID=f"broker-{prefix}",
    )
    return env
