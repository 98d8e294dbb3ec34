"""Fixed-window request counters, in the database so every broker process shares them."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, delete

from broker.store.tables import RateWindowRow


def take(session: Session, key: str, *, limit: int, per: timedelta, now: datetime) -> int | None:
    """Count one request against ``key``'s current window; ``None`` when it is within
    ``limit``, else the whole seconds until the window ends (for ``Retry-After``)."""
    period = max(per.total_seconds(), 1.0)
    start_ts = math.floor(now.timestamp() / period) * period
    start = datetime.fromtimestamp(start_ts, UTC)
    end = start + timedelta(seconds=period)
    table = RateWindowRow.__table__  # type: ignore[attr-defined]
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(table)
        .values(key=key[:160], window_start=start, count=1, expires_at=end)
        .on_conflict_do_update(
            index_elements=[table.c.key, table.c.window_start],
            set_={"count": table.c.count + 1},
        )
        .returning(table.c.count)
    )
    count = int(session.execute(statement).scalar_one())
    if count <= limit:
        return None
    return max(1, math.ceil((end - now).total_seconds()))


def purge(session: Session, now: datetime) -> int:
    """Drop the windows that have ended."""
    result = session.exec(delete(RateWindowRow).where(col(RateWindowRow.expires_at) <= now))
    return int(result.rowcount or 0)
