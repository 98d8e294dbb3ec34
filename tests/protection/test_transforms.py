"""The per-field transforms: keep, drop, pseudonymise, round, bucket, generalise."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from broker.domain.contracts import IsoDuration, Transform, TransformOp
from broker.protection.keys import Pseudonymiser
from broker.protection.transforms import (
    DROPPED,
    apply_transform,
    bucket_number,
    bucket_time,
    floor_instant,
    round_number,
)

PSEUDONYMISER = Pseudonymiser.for_contract(bytes(range(32)), "rcp-a", "contract-1")


def run(op: TransformOp, value: Any, **params: Any) -> Any:
    return apply_transform(value, Transform("vehicle.x.y", op, **params), PSEUDONYMISER)


def test_keep_and_drop() -> None:
    assert run(TransformOp.KEEP, {"kept": "as is"}) == {"kept": "as is"}
    assert run(TransformOp.DROP, 12) is DROPPED


def test_pseudonymise_is_the_identifier_pseudonym_of_the_text() -> None:
    assert run(TransformOp.PSEUDONYMISE, "Jan de Vries") == PSEUDONYMISER.identifier("jan de vries")
    assert run(TransformOp.PSEUDONYMISE, 42) == PSEUDONYMISER.identifier("42")
    assert run(TransformOp.PSEUDONYMISE, ["a", "b"]) == [
        PSEUDONYMISER.identifier("a"),
        PSEUDONYMISER.identifier("b"),
    ]
    assert run(TransformOp.PSEUDONYMISE, None) is None


@pytest.mark.parametrize(
    ("value", "decimals", "expected"),
    [
        (52.370216, 4, 52.3702),
        (52.370216, 2, 52.37),
        (12.6, 0, 13),
        (1234.5, -2, 1200),
        (7, 2, 7),
    ],
)
def test_round(value: float, decimals: int, expected: float) -> None:
    assert run(TransformOp.ROUND, value, decimals=decimals) == expected
    assert type(round_number(value, decimals)) is type(expected)


def test_round_refuses_non_numbers() -> None:
    assert run(TransformOp.ROUND, "52.370216", decimals=2) is DROPPED
    assert run(TransformOp.ROUND, True, decimals=2) is DROPPED
    assert run(TransformOp.ROUND, [1.234, "x"], decimals=1) is DROPPED
    assert run(TransformOp.ROUND, [1.234, 5.678], decimals=1) == [1.2, 5.7]


@pytest.mark.parametrize(
    ("value", "size", "expected"),
    [
        (87, 10, 80),
        (87.9, 10, 80),
        (-3, 10, -10),
        (12_345.6, 1000, 12_000),
        (0.37, 0.1, 0.3),
        (15, 5, 15),
    ],
)
def test_numeric_bucket_is_the_lower_bound(value: float, size: float, expected: float) -> None:
    assert run(TransformOp.BUCKET, value, size=size) == expected
    assert type(bucket_number(value, size)) is type(expected)


def test_numeric_bucket_refuses_what_it_cannot_bucket() -> None:
    assert run(TransformOp.BUCKET, "87", size=10) is DROPPED
    assert bucket_number(87, 0) is DROPPED
    assert run(TransformOp.BUCKET, "2026-03-02", size=10) is DROPPED


@pytest.mark.parametrize(
    ("value", "size", "expected"),
    [
        ("2026-03-02T08:47:13Z", "PT15M", "2026-03-02T08:45:00Z"),
        ("2026-03-02T08:47:13+02:00", "PT1H", "2026-03-02T06:00:00Z"),
        ("2026-03-04T08:47:13Z", "P1D", "2026-03-04T00:00:00Z"),
        ("2026-03-04T08:47:13Z", "P1W", "2026-03-02T00:00:00Z"),  # a Monday
        ("2026-05-17", "P1M", "2026-05-01"),
        ("2026-05-17", "P3M", "2026-04-01"),
        ("2026-05-17", "P1Y", "2026-01-01"),
        ("2026-05-17", "PT1H", "2026-05-17"),
    ],
)
def test_time_bucket(value: str, size: str, expected: str) -> None:
    assert run(TransformOp.BUCKET, value, size=IsoDuration.parse(size)) == expected


def test_time_bucket_refuses_what_is_no_time() -> None:
    assert bucket_time("next tuesday", IsoDuration.parse("P1D")) is DROPPED
    assert bucket_time(20260302, IsoDuration.parse("P1D")) is DROPPED
    assert bucket_time("2026-03-02T08:00:00", IsoDuration.parse("P1D")) is DROPPED  # naive


def test_floor_instant() -> None:
    when = datetime(2026, 3, 2, 8, 47, 13, 500, tzinfo=UTC)
    assert floor_instant(when, IsoDuration.parse("PT15M")) == datetime(
        2026, 3, 2, 8, 45, tzinfo=UTC
    )
    assert floor_instant(when, IsoDuration.parse("PT0S")) == datetime(
        2026, 3, 2, 8, 47, 13, tzinfo=UTC
    )


def test_generalise_is_for_coordinates_only() -> None:
    # Coordinates are generalised as a point by protect(); anything else cannot be.
    assert run(TransformOp.GENERALISE, 52.37, grid_m=1000) is DROPPED
    assert run(TransformOp.GENERALISE, "Amsterdam", grid_m=1000) is DROPPED
