"""Positions on a metric grid: snapping to the centre of a cell, and distances.

The grid has rows of ``grid_m / 111 320`` degrees of latitude. Each row has
columns of ``grid_m`` metres measured at the row's central latitude, so a cell
is about ``grid_m`` x ``grid_m`` metres anywhere on earth and a point always
falls in the same cell. A snapped coordinate is the cell centre, rounded to as
few decimals as keep it well inside the cell (never more than the precision the
grid deserves). Distances are great-circle distances (haversine formula).
"""

from __future__ import annotations

import math
from typing import Any, Final

#: Metres in one degree of latitude (and of longitude at the equator).
METRES_PER_DEGREE: Final = 111_320.0
#: Mean earth radius in metres (IUGG).
EARTH_RADIUS_M: Final = 6_371_008.8
#: Near the poles a column would become infinitely wide in degrees; cap the shrink factor.
_MIN_COS: Final = 0.01


def coordinate(value: Any, limit: float) -> float | None:
    """``value`` as a coordinate within ``[-limit, limit]``, or None if it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    if not math.isfinite(number) or abs(number) > limit:
        return None
    return number


def latitude_step(grid_m: float) -> float:
    """Degrees of latitude in one row of the grid."""
    _check_grid(grid_m)
    return grid_m / METRES_PER_DEGREE


def snap_latitude(latitude: float, grid_m: float) -> float:
    """The (rounded) central latitude of the row holding ``latitude``."""
    return _round_within(_row_centre(latitude, grid_m), latitude_step(grid_m))


def snap(latitude: float, longitude: float, grid_m: float) -> tuple[float, float]:
    """The (rounded) centre of the cell holding the point."""
    lat_step = latitude_step(grid_m)
    row_centre = _row_centre(latitude, grid_m)
    lon_step = _longitude_step(row_centre, grid_m)
    column = math.floor((longitude + 180.0) / lon_step)
    lon_centre = min(-180.0 + (column + 0.5) * lon_step, 180.0)
    return _round_within(row_centre, lat_step), _round_within(lon_centre, lon_step)


def cell_of(latitude: float, longitude: float, grid_m: float) -> tuple[int, int]:
    """The (row, column) index of the cell holding the point."""
    row_centre = _row_centre(latitude, grid_m)
    row = math.floor((latitude + 90.0) / latitude_step(grid_m))
    column = math.floor((longitude + 180.0) / _longitude_step(row_centre, grid_m))
    return row, column


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two points (haversine)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    d_phi = phi2 - phi1
    d_lambda = math.radians(lon2 - lon1)
    h = math.sin(d_phi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(d_lambda / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def _check_grid(grid_m: float) -> None:
    if not grid_m > 0:
        raise ValueError("a grid needs a positive cell size")


def _row_centre(latitude: float, grid_m: float) -> float:
    step = latitude_step(grid_m)
    row = math.floor((latitude + 90.0) / step)
    return max(-90.0, min(90.0, -90.0 + (row + 0.5) * step))


def _longitude_step(row_centre: float, grid_m: float) -> float:
    shrink = max(math.cos(math.radians(row_centre)), _MIN_COS)
    return min(grid_m / (METRES_PER_DEGREE * shrink), 360.0)


def _round_within(centre: float, step: float) -> float:
    """``centre`` rounded to the fewest decimals that move it at most a quarter step.

    A quarter step keeps it inside its own cell and apart from its neighbours.
    """
    decimals = max(0, math.ceil(-math.log10(step / 2)))
    return round(centre, decimals)
