"""The command line, run as a user runs it: a real process, real files, real databases."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa

from broker import __version__
from broker.audit.checkpoint import CheckpointSigner
from broker.protection.keys import generate_master_key

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "contracts" / "samples").glob("*.json"))
DEMO_SEED = ROOT / "examples" / "demo-seed.json"


@pytest.fixture(scope="session", autouse=True)
def keys(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Key files for every broker process the tests start (never the checkout's var/)."""
    folder = tmp_path_factory.mktemp("keys")
    KEYS["BROKER_MASTER_KEY_FILE"] = str(folder / "master.key")
    KEYS["BROKER_AUDIT_KEY_FILE"] = str(folder / "audit-signing.key")
    KEYS["BROKER_OAUTH_KEYS_DIR"] = str(folder / "oauth-keys")
    (folder / "master.key").write_text(generate_master_key())
    CheckpointSigner.generate(folder / "audit-signing.key")


KEYS: dict[str, str] = {}


def run(
    *args: str, database_url: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env.update(KEYS)
    if database_url:
        env["BROKER_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "broker", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env, check=False,
    )  # fmt: skip


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("broker: ")


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"broker {__version__}"


def test_usage_errors_are_one_line() -> None:
    result = run("no-such-command")
    assert result.returncode == 2
    assert_one_line_error(result)
    assert len(result.stderr.strip().splitlines()) == 1


def test_sample_contracts_validate() -> None:
    assert len(SAMPLES) == 6
    result = run("contracts", "validate", *map(str, SAMPLES))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": valid") == 6


def test_a_broken_contract_is_reported_with_its_json_path(tmp_path: Path) -> None:
    document = json.loads((ROOT / "contracts" / "samples" / "insurer-ubi.json").read_text())
    del document["legal_basis"]
    document["processing_countries"] = ["XX"]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(document))
    result = run("contracts", "validate", str(SAMPLES[0]), str(broken))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{broken}: $" in result.stderr
    assert "legal_basis" in result.stderr
    assert "processing_countries" in result.stderr
    assert "1 of 2 contract file(s) invalid" in result.stderr


def test_a_file_that_is_not_json_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    result = run("contracts", "validate", str(bad))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "line 1" in result.stderr


def test_the_demo_seed_loads_and_loading_it_twice_changes_nothing(database_url: str) -> None:
    first = run("seed", str(DEMO_SEED), database_url=database_url)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["created"]["customers"] >= 3
    assert report["created"]["contracts"] == 6
    assert report["created"]["grants"] >= 6
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    tables = ["customer", "vehicle", "vehicle_party", "recipient", "scc_agreement", "oauth_client",
              "contract", "data_grant", "grant_event", "fleet_membership"]  # fmt: skip

    def snapshot() -> dict[str, list[tuple[object, ...]]]:
        with engine.connect() as conn:
            return {
                t: sorted(map(tuple, conn.execute(sa.text(f'SELECT * FROM "{t}"'))), key=repr)
                for t in tables
            }

    before = snapshot()
    second = run("seed", str(DEMO_SEED), database_url=database_url)
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert again["created"] == {} and again["updated"] == {}
    assert snapshot() == before
    engine.dispose()


def test_a_missing_or_broken_seed_is_one_clear_error(database_url: str, tmp_path: Path) -> None:
    missing = run("seed", str(tmp_path / "nope.json"), database_url=database_url)
    assert_one_line_error(missing)
    assert "no such seed file" in missing.stderr
    seed = json.loads(DEMO_SEED.read_text())
    seed["grants"][0]["vin"] = "NOSUCHVIN00000000"
    broken = tmp_path / "broken-seed.json"
    broken.write_text(json.dumps(seed))
    result = run("seed", str(broken), database_url=database_url)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "$.grants[0]" in result.stderr
    assert "nothing was loaded" in result.stderr


def test_a_database_from_a_newer_broker_is_refused(database_url: str) -> None:
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff_future'"))
    engine.dispose()
    result = run("db", "status", database_url=database_url)
    assert_one_line_error(result)
    assert "newer broker" in result.stderr
    result = run("seed", str(DEMO_SEED), database_url=database_url)
    assert_one_line_error(result)
    assert "newer broker" in result.stderr


def test_the_demo_prepares_data_and_prints_how_to_explore(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.sqlite3'}"
    result = run("demo", "--no-serve", database_url=url)
    assert result.returncode == 0, result.stderr
    assert "DEMO" in result.stdout
    assert "/healthz" in result.stdout
    seed = json.loads(DEMO_SEED.read_text())
    for customer in seed["customers"]:
        assert customer["login"] in result.stdout
    telemetry = json.loads(result.stdout.split("telemetry: ", 1)[1].splitlines()[0])
    assert telemetry["stored"] > 100
    assert telemetry["rejected"] == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_answers_health_and_readiness(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env.update(KEYS)
    env["BROKER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'serve.sqlite3'}"
    env["BROKER_PURGE_INTERVAL"] = "1"
    log_path = tmp_path / "serve.log"
    with (
        log_path.open("w") as log,
        subprocess.Popen(
            [sys.executable, "-m", "broker", "serve", "--port", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        ) as process,
    ):  # fmt: skip
        try:
            body = None
            for _ in range(300):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                        body = json.loads(r.read())
                        break
                except OSError:
                    if process.poll() is not None:
                        pytest.fail(f"broker serve exited: {log_path.read_text()}")
                    time.sleep(0.1)
            assert body == {"status": "ready"}
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                assert json.loads(r.read())["version"] == __version__
                assert r.headers["X-Content-Type-Options"] == "nosniff"
            # Housekeeping runs every BROKER_PURGE_INTERVAL seconds while serving.
            for _ in range(100):
                if '"housekeeping"' in log_path.read_text():
                    break
                time.sleep(0.1)
        finally:
            process.terminate()
            process.wait(timeout=20)
    # Logs are JSON lines and name no personal data.
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    assert any(line.get("msg") == "broker listening" for line in lines)
    done = [line["done"] for line in lines if line.get("msg") == "housekeeping"]
    assert done and done[0]["audit_checkpoint"]["size"] >= 0


def test_audit_checkpoint_and_verify_detect_tampering(database_url: str) -> None:
    assert run("seed", str(DEMO_SEED), database_url=database_url).returncode == 0
    checkpoint = run("audit", "checkpoint", database_url=database_url)
    assert checkpoint.returncode == 0, checkpoint.stderr
    assert checkpoint.stdout.startswith("checkpoint of ")
    verified = run("audit", "verify", database_url=database_url)
    assert verified.returncode == 0, verified.stderr
    assert "audit log OK" in verified.stdout
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_entry WHERE seq = 3"))
    engine.dispose()
    broken = run("audit", "verify", database_url=database_url)
    assert broken.returncode == 1
    assert "Traceback" not in broken.stderr
    assert "FAILED at entry 3" in broken.stderr


def test_bench_gate_prints_a_ratio_to_its_baseline() -> None:
    result = run("bench", "gate", "--releases", "40", "--concurrency", "8")
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines())
    assert lines["backend"].strip() == "sqlite"
    assert float(lines["ratio gate/plain"]) > 0
    bad = run("bench", "gate", "--releases", "0")
    assert_one_line_error(bad)


def test_bench_ingest_prints_a_ratio_to_its_baseline() -> None:
    result = run("bench", "ingest", "--records", "300", "--batch", "100")
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines())
    assert lines["records"].strip().startswith("300 ")
    assert float(lines["ratio ingest/plain"]) > 0


def test_bench_webhooks_prints_a_ratio_to_its_baseline() -> None:
    result = run("bench", "webhooks", "--messages", "60", "--vehicles", "6", "--concurrency", "4")
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines())
    assert lines["backend"].strip() == "sqlite"
    assert lines["messages"].strip().startswith("60 data.vehicle.status (6 vehicles")
    assert float(lines["webhook messages/s"].split()[0].replace(",", "")) > 0
    assert float(lines["plain POSTs/s"].split()[0].replace(",", "")) > 0
    assert float(lines["ratio webhook/plain"]) > 0
    bad = run("bench", "webhooks", "--vehicles", "0")
    assert_one_line_error(bad)


@pytest.mark.postgres
def test_bench_webhooks_runs_pings_on_a_scratch_postgresql_database(postgres_admin: str) -> None:
    result = run("bench", "webhooks", "--messages", "40", "--pings", "--postgres", postgres_admin)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines())
    assert lines["backend"].strip() == "postgresql"
    assert lines["messages"].strip().startswith("40 ping ")
    assert float(lines["ratio webhook/plain"]) > 0


def test_purge_reports_what_it_erased(database_url: str) -> None:
    assert run("seed", str(DEMO_SEED), database_url=database_url).returncode == 0
    result = run("purge", database_url=database_url)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["telemetry:vehicle.position"]["count"] == 0
    assert report["telemetry:vehicle.position"]["up_to"].endswith("Z")


def test_loading_contract_amendments_says_whether_they_widen_or_narrow(
    database_url: str, tmp_path: Path
) -> None:
    assert run("seed", str(DEMO_SEED), database_url=database_url).returncode == 0
    sample = json.loads((ROOT / "contracts" / "samples" / "insurer-ubi.json").read_text())
    narrowed = dict(sample, version=2, retention_at_recipient="P30D")
    widened = dict(sample, version=3, channels=["pull", "export"])
    paths = []
    for document in (narrowed, widened):
        path = tmp_path / f"insurer-v{document['version']}.json"
        path.write_text(json.dumps(document))
        paths.append(str(path))
    result = run("contracts", "load", *paths, database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert "insurer-ubi v2: amendment narrows scope" in result.stdout
    assert "insurer-ubi v3: amendment widens scope" in result.stdout
    assert "consent again" in result.stdout
    again = run("contracts", "load", paths[0], database_url=database_url)
    assert "insurer-ubi v2: unchanged" in again.stdout
    changed = dict(narrowed, retention_at_recipient="P40D")
    Path(paths[0]).write_text(json.dumps(changed))
    conflict = run("contracts", "load", paths[0], database_url=database_url)
    assert conflict.returncode == 1
    assert "already loaded with other content" in conflict.stderr


def test_rotating_the_signing_key_keeps_the_old_one_published(tmp_path: Path) -> None:
    from broker.oauth.keys import SigningKeys

    env_dir = tmp_path / "oauth-keys"
    first = SigningKeys.load(env_dir)
    previous = dict(KEYS)
    KEYS["BROKER_OAUTH_KEYS_DIR"] = str(env_dir)
    try:
        result = run("oauth", "rotate-key")
    finally:
        KEYS.clear()
        KEYS.update(previous)
    assert result.returncode == 0, result.stderr
    rotated = SigningKeys.load(env_dir)
    assert rotated.current_kid != first.current_kid
    assert first.current_kid in {k["kid"] for k in rotated.jwks()["keys"]}


def test_holder_changes_apply_once_each_from_the_command_line(tmp_path: Path) -> None:
    """On SQLite only: tests/holders runs the same use case through HTTP on both databases."""
    from datetime import UTC, datetime, timedelta

    from broker.clock import format_instant

    url = f"sqlite:///{tmp_path / 'holders.sqlite3'}"
    assert run("seed", str(DEMO_SEED), database_url=url).returncode == 0
    cooper = "WMWXR31002TA10001"
    sold = format_instant(datetime.now(UTC) - timedelta(minutes=1))
    sale = ["holders", "sale", "--vin", cooper, "--to", "cus-carla", "--at", sold]
    sale += ["--change-id", "cli-sale-1"]
    first = run(*sale, database_url=url)
    assert first.returncode == 0, first.stderr
    applied = json.loads(first.stdout)
    assert applied["ended_grants"] == 1 and applied["repeated"] is False
    again = json.loads(run(*sale, database_url=url).stdout)
    assert again == dict(applied, repeated=True)
    for command, party, who in (
        ("fleet-join", "--operator", "rcp-fleet"),
        ("fleet-leave", "--operator", "rcp-fleet"),
        ("driver-start", "--customer", "cus-bram"),
        ("driver-end", "--customer", "cus-bram"),
    ):
        result = run("holders", command, "--vin", cooper, party, who, database_url=url)
        assert result.returncode == 0, (command, result.stderr)
        assert json.loads(result.stdout)["repeated"] is False
    engine = sa.create_engine(url)
    with engine.connect() as conn:

        def column(sql: str) -> list[object]:
            return list(conn.execute(sa.text(sql), {"vin": cooper}).scalars())

        state = column("SELECT state FROM data_grant WHERE id = 'gr-677f38bc93017473'")
        fleet = column("SELECT until FROM fleet_membership WHERE vin = :vin")
        bram = column(
            "SELECT until FROM vehicle_party WHERE vin = :vin AND customer_id = 'cus-bram'"
        )
        audited = column("SELECT count(*) FROM audit_entry WHERE kind = 'holder_change'")
    engine.dispose()
    assert state == ["revoked"]  # anna's consent ended with her sale
    assert len(fleet) == 1 and fleet[0] is not None
    assert len(bram) == 2 and None not in bram  # the sale ended one period, driver-end the other
    assert audited == [5]
    bad = run("holders", "sale", "--vin", "NOT-A-VIN", "--to", "cus-carla", database_url=url)
    assert_one_line_error(bad)
    assert "$.vin" in bad.stderr and "NOT-A-VIN" not in bad.stderr
