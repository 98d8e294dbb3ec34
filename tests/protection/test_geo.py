"""Grid snapping on a metric grid, and haversine distances."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.protection.geo import (
    cell_of,
    coordinate,
    distance_m,
    latitude_step,
    snap,
    snap_latitude,
)

latitudes = st.floats(min_value=-89.9, max_value=89.9)
longitudes = st.floats(min_value=-179.9, max_value=179.9)
grids = st.sampled_from([100, 250, 500, 1000, 5000, 25_000])


@given(lat=latitudes, lon=longitudes, grid=grids)
def test_a_snapped_point_stays_in_its_cell(lat: float, lon: float, grid: int) -> None:
    snapped = snap(lat, lon, grid)
    assert cell_of(*snapped, grid) == cell_of(lat, lon, grid)
    assert snap(*snapped, grid) == snapped  # idempotent: the centre is its own cell's centre


@given(lat=latitudes, lon=longitudes, grid=grids)
def test_snapping_moves_a_point_less_than_a_cell_diagonal(
    lat: float, lon: float, grid: int
) -> None:
    # Half a cell to the centre, and the centre's rounding at most a quarter cell more.
    moved = distance_m(lat, lon, *snap(lat, lon, grid))
    assert moved <= grid * math.sqrt(2) * 0.75 * 1.05 + 1


@given(lat=latitudes, lon=longitudes, grid=grids)
def test_snapped_coordinates_have_few_decimals(lat: float, lon: float, grid: int) -> None:
    for value in snap(lat, lon, grid):
        decimals = repr(value).split(".")[1] if "." in repr(value) else ""
        assert len(decimals) <= 4 or "e" in repr(value)


def test_two_points_in_one_cell_map_to_the_same_value() -> None:
    a = (52.37021, 4.89517)
    b = (52.37061, 4.89551)  # about 50 m away
    assert cell_of(*a, 1000) == cell_of(*b, 1000)
    assert snap(*a, 1000) == snap(*b, 1000)


def test_points_in_neighbouring_cells_map_to_different_values() -> None:
    lat, lon = snap(52.37, 4.89, 1000)
    step = latitude_step(1000)
    assert snap(lat + step, lon, 1000) != (lat, lon)
    assert snap(lat + step, lon, 1000)[0] == pytest.approx(lat + step, abs=step / 4)


def test_cells_are_about_grid_m_wide_in_both_directions() -> None:
    lat, lon = snap(52.37, 4.89, 1000)
    north = snap(lat + latitude_step(1000), lon, 1000)
    assert distance_m(lat, lon, north[0], lon) == pytest.approx(1000, rel=0.05)
    # The next cell to the east: search along the row.
    east = next(
        snap(lat, lon + d / 100_000, 1000)
        for d in range(1, 10_000)
        if snap(lat, lon + d / 100_000, 1000)[1] != lon
    )
    assert distance_m(lat, lon, lat, east[1]) == pytest.approx(1000, rel=0.05)


def test_snap_latitude_matches_the_point_snap() -> None:
    assert snap_latitude(52.37021, 1000) == snap(52.37021, 4.89517, 1000)[0]


def test_near_the_poles_columns_stay_bounded() -> None:
    lat, lon = snap(89.99, 179.99, 1000)
    assert -90 <= lat <= 90
    assert -180 <= lon <= 180


def test_grid_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        snap(52.0, 4.0, 0)


@pytest.mark.parametrize(
    ("value", "limit", "expected"),
    [
        (52.5, 90, 52.5),
        (52, 90, 52.0),
        (91.0, 90, None),
        (True, 90, None),
        ("52.5", 90, None),
        (float("nan"), 90, None),
        (float("inf"), 180, None),
        (None, 90, None),
    ],
)
def test_coordinate(value: object, limit: float, expected: float | None) -> None:
    assert coordinate(value, limit) == expected


def test_haversine_distances() -> None:
    assert distance_m(52.0, 4.0, 52.0, 4.0) == 0
    # One degree of latitude is about 111.2 km.
    assert distance_m(52.0, 4.0, 53.0, 4.0) == pytest.approx(111_195, rel=1e-3)
    # Amsterdam Centraal to Utrecht Centraal, about 35 km.
    assert distance_m(52.3791, 4.9003, 52.0894, 5.1101) == pytest.approx(35_000, rel=0.05)
