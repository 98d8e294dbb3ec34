"""``broker bench gate``: releases/s through the gate with a durable audit, next to a baseline.

The baseline is plain durable inserts of rows of the same shape as the audit
entries, one transaction each, through the same database runner and event loop,
measured in the same run. The figure that matters is the ratio: machines are
shared and noisy, so absolute numbers are printed but never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import sqlalchemy as sa
from sqlmodel import Session

from broker.clock import ManualClock, parse_instant
from broker.documents import DocumentLibrary
from broker.domain.contracts import Channel
from broker.gate.gate import Gate
from broker.gate.keyring import Keyring
from broker.gate.release import Release, ReleaseRequest, VehicleTarget
from broker.gate.revocation import RevocationListeners
from broker.services.grants import GrantService
from broker.services.seed import apply_seed, read_seed
from broker.settings import Settings
from broker.simulator import VehicleState, drive
from broker.store.database import Database
from broker.store.migrate import upgrade
from broker.store.telemetry_write import NewRecord, store_records
from broker.transfer.adequacy import AdequacyTable
from broker.vault.vault import Vault

_VIN = "WMWXR31002TA10001"
_NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
_PLAIN = sa.Table(
    "bench_plain_insert",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("entry", sa.JSON, nullable=False),
    sa.Column("leaf_hash", sa.String(64), nullable=False),
)


@dataclass(frozen=True)
class BenchResult:
    backend: str
    releases: int
    concurrency: int
    gate_per_second: float
    plain_per_second: float
    batches: int

    @property
    def ratio(self) -> float:
        return self.gate_per_second / self.plain_per_second

    def lines(self) -> list[str]:
        return [
            f"backend:            {self.backend}",
            f"releases:           {self.releases} (concurrency {self.concurrency})",
            f"gate releases/s:    {self.gate_per_second:,.0f}"
            f"  (durable audit, {self.batches} commits)",
            f"plain inserts/s:    {self.plain_per_second:,.0f}  (one durable commit per row)",
            f"ratio gate/plain:   {self.ratio:.2f}",
        ]


@contextlib.contextmanager
def scratch_database(postgres_admin_url: str | None) -> Iterator[str]:
    """A fresh database for the run: a temporary SQLite file, or a PostgreSQL database."""
    if postgres_admin_url is None:
        with tempfile.TemporaryDirectory(prefix="broker-bench-") as folder:
            yield f"sqlite:///{Path(folder) / 'bench.sqlite3'}"
        return
    name = f"broker_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.make_url(postgres_admin_url).set(drivername="postgresql")
    dsn = admin.render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _run(url: str, releases: int, concurrency: int, seed_path: Path) -> BenchResult:
    database = Database(url, pool_size=max(8, min(concurrency, 32)))
    try:
        upgrade(database)
        settings = Settings()
        library = DocumentLibrary(settings.contracts_dir)
        grants = GrantService(RevocationListeners())
        seed = read_seed(library, seed_path)
        vault = Vault(bytes(range(32)), ManualClock(_NOW))
        database.run_sync(lambda s: apply_seed(s, seed, grants, vault=vault, now=_NOW), write=True)
        records = [
            NewRecord(
                r["record_id"], r["vin"], r["category"], parse_instant(r["recorded_at"]), r["data"]
            )
            for r in drive(VehicleState(_VIN), start=_NOW - timedelta(hours=1))
            if r["category"] == "vehicle.status"
        ]
        database.run_sync(lambda s: store_records(s, records, received_at=_NOW), write=True)
        clock = ManualClock(_NOW)
        gate = Gate(
            database=database,
            clock=clock,
            adequacy=AdequacyTable.load(settings.contracts_dir / "adequacy.json"),
            keyring=Keyring(bytes(32)),
            vault=vault,
        )
        request = ReleaseRequest(
            recipient_id="rcp-insurer",
            contract_id="insurer-ubi",
            channel=Channel.PULL,
            purpose="usage-based-insurance",
            target=VehicleTarget(_VIN),
            categories=frozenset({"vehicle.status"}),
            since=_NOW - timedelta(hours=2),
            until=_NOW,
        )
        sample = await gate.release(request)
        assert isinstance(sample, Release), "the bench's release must be allowed"
        row = {"entry": json.loads(json.dumps(sample.transfer)), "leaf_hash": "0" * 64}
        database.run_sync(lambda s: _PLAIN.create(s.connection()), write=True)

        def insert(session: Session) -> None:
            session.execute(_PLAIN.insert().values(**row))

        async def plain() -> None:
            await database.write(insert)

        plain_rate = await _rate(plain, releases, concurrency)

        async def release() -> None:
            outcome = await gate.release(request)
            assert isinstance(outcome, Release)

        batches_before = gate.committer.batches
        gate_rate = await _rate(release, releases, concurrency)
        batches = gate.committer.batches - batches_before
        await gate.close()
        return BenchResult(
            backend=database.dialect,
            releases=releases,
            concurrency=concurrency,
            gate_per_second=gate_rate,
            plain_per_second=plain_rate,
            batches=batches,
        )
    finally:
        database.close()


async def _rate(operation: object, count: int, concurrency: int) -> float:
    assert callable(operation)
    semaphore = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with semaphore:
            await operation()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    return count / (time.perf_counter() - started)


def bench_gate(
    *, releases: int, concurrency: int, postgres_admin_url: str | None, seed_path: Path
) -> BenchResult:
    with scratch_database(postgres_admin_url) as url:
        return asyncio.run(_run(url, releases, concurrency, seed_path))


_PLAIN_RECORDS = sa.Table(
    "bench_plain_record",
    sa.MetaData(),
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("vin", sa.String(17), nullable=False),
    sa.Column("category", sa.String(64), nullable=False),
    sa.Column("recorded_at", sa.String(40), nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
)


@dataclass(frozen=True)
class IngestBenchResult:
    backend: str
    records: int
    batch: int
    ingest_per_second: float
    plain_per_second: float

    @property
    def ratio(self) -> float:
        return self.ingest_per_second / self.plain_per_second

    def lines(self) -> list[str]:
        return [
            f"backend:            {self.backend}",
            f"records:            {self.records} (batches of {self.batch})",
            f"ingest records/s:   {self.ingest_per_second:,.0f}"
            "  (validated, deduplicated, positions encrypted)",
            f"plain inserts/s:    {self.plain_per_second:,.0f}  (same rows, same batches)",
            f"ratio ingest/plain: {self.ratio:.2f}",
        ]


def _simulated(count: int, vins: list[str]) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    round_ = 0
    while len(found) < count:
        for index, vin in enumerate(vins):
            start = _NOW - timedelta(hours=3) + timedelta(minutes=round_)
            for record in drive(VehicleState(vin), start=start, seed=round_ * 100 + index):
                record = dict(record)
                record["record_id"] = f"{record['record_id']}-{round_}"
                found.append(record)
        round_ += 1
    return found[:count]


def _insert_plain(session: Session, *, rows: list[dict[str, object]]) -> None:
    session.execute(_PLAIN_RECORDS.insert(), rows)


async def _run_ingest(url: str, count: int, batch: int, seed_path: Path) -> IngestBenchResult:
    from broker.ingest.service import IngestService, RawItem

    database = Database(url)
    try:
        upgrade(database)
        library = DocumentLibrary(Settings().contracts_dir)
        clock = ManualClock(_NOW)
        vault = Vault(bytes(range(32)), clock)
        seed = read_seed(library, seed_path)
        grants = GrantService(RevocationListeners())
        database.run_sync(lambda s: apply_seed(s, seed, grants, vault=vault, now=_NOW), write=True)
        vins = [v["vin"] for v in seed.document["vehicles"] if v["location"]["collection"]]
        records = _simulated(count, vins)
        database.run_sync(lambda s: _PLAIN_RECORDS.create(s.connection()), write=True)
        chunks = [records[i : i + batch] for i in range(0, len(records), batch)]

        started = time.perf_counter()
        for chunk in chunks:
            rows = [
                {k: r[k] for k in ("vin", "category", "recorded_at", "data")}
                | {"id": r["record_id"]}
                for r in chunk
            ]
            await database.write(functools.partial(_insert_plain, rows=rows))
        plain_rate = len(records) / (time.perf_counter() - started)

        service = IngestService(database=database, documents=library, clock=clock, vault=vault)
        started = time.perf_counter()
        for chunk in chunks:
            result = await service.ingest(
                [RawItem(r, i) for i, r in enumerate(chunk)], source="bench"
            )
            assert result.rejected == 0, "the bench's records must all be valid"
        ingest_rate = len(records) / (time.perf_counter() - started)
        return IngestBenchResult(database.dialect, len(records), batch, ingest_rate, plain_rate)
    finally:
        database.close()


def bench_ingest(
    *, records: int, batch: int, postgres_admin_url: str | None, seed_path: Path
) -> IngestBenchResult:
    with scratch_database(postgres_admin_url) as url:
        return asyncio.run(_run_ingest(url, records, batch, seed_path))
