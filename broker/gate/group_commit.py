"""Group commit: concurrent releases share one durable commit.

Work submitted while a batch is being written waits for the next batch; each
batch runs in one write transaction, every item inside its own SAVEPOINT, so
one item's failure rolls back only that item. The audit log's durability costs
one fsync per batch instead of one per release.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlmodel import Session

from broker.store.database import Database

T = TypeVar("T")


@dataclass
class _Job:
    work: Callable[[Session], Any]
    future: asyncio.Future[Any]


class GroupCommitter:
    def __init__(self, database: Database, *, max_batch: int = 128) -> None:
        self._database = database
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0
        self.jobs = 0

    async def submit(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in the next batch's transaction; its result once committed."""
        loop = asyncio.get_running_loop()
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._drain(self._queue), name="gate-group-commit")
        future: asyncio.Future[T] = loop.create_future()
        await self._queue.put(_Job(work, future))
        return await future

    async def _drain(self, queue: asyncio.Queue[_Job]) -> None:
        while True:
            batch = [await queue.get()]
            while len(batch) < self._max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                outcomes = await self._database.write(functools.partial(_run_batch, batch=batch))
            except BaseException as exc:
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            self.batches += 1
            self.jobs += len(batch)
            for job, (ok, value) in zip(batch, outcomes, strict=True):
                if job.future.done():
                    continue
                if ok:
                    job.future.set_result(value)
                else:
                    job.future.set_exception(value)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None


def _run_batch(session: Session, batch: list[_Job]) -> list[tuple[bool, Any]]:
    outcomes: list[tuple[bool, Any]] = []
    for job in batch:
        savepoint = session.begin_nested()
        try:
            value = job.work(session)
            savepoint.commit()
            outcomes.append((True, value))
        except Exception as exc:  # the item fails alone; the batch goes on
            if savepoint.is_active:
                savepoint.rollback()
            outcomes.append((False, exc))
    return outcomes
