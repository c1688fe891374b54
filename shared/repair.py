"""Opt-in repairs of real-world items (`"repair": [...]` in a job message); today only `bbox`.

Real Planetary Computer items sometimes have a geometry and no `bbox`. The STAC spec requires the box
then, but pgstac falls back to the geometry, so the catalog's own data has such items. With
`repair: ["bbox"]` the box is computed from the geometry; nothing else of the item changes.

The box follows RFC 7946 §5.2: a geometry that crosses the antimeridian is split into parts that each
stay on one side, and its box then has west > east. `pystac.utils.geometry_to_bbox` takes plain
min/max, which turns such a geometry into a box around the whole world. Here each part's longitude
range is kept as it is (a part never crosses the antimeridian), and the box is the shortest arc of
longitudes that covers every part.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class GeometryError(ValueError):
    """The geometry has no coordinates a box can be computed from."""


def bbox_of(geometry: Any) -> list[float]:
    """[west, south, east, north] of a GeoJSON geometry; west > east when it crosses the antimeridian.

    Raises:
        GeometryError: the geometry is not a GeoJSON geometry with numeric coordinates.
    """
    parts = list(_parts(geometry))
    if not parts:
        raise GeometryError("the geometry has no coordinates")
    lons = [(min(x for x, _ in part), max(x for x, _ in part)) for part in parts]
    south = min(min(y for _, y in part) for part in parts)
    north = max(max(y for _, y in part) for part in parts)
    west, east = _shortest_covering_arc(lons)
    return [west, south, east, north]


def _shortest_covering_arc(ranges: list[tuple[float, float]]) -> tuple[float, float]:
    """(west, east) of the shortest arc covering every [min, max] longitude range: the complement of the widest gap."""
    merged: list[list[float]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    west, east = merged[0][0], merged[-1][1]
    widest = merged[0][0] + 360 - merged[-1][1]  # the gap across the antimeridian: no crossing
    for before, after in zip(merged, merged[1:], strict=False):
        if after[0] - before[1] > widest:
            widest, west, east = after[0] - before[1], after[0], before[1]
    return west, east


def _parts(geometry: Any) -> Iterator[list[tuple[float, float]]]:
    """The (lon, lat) points of each part that RFC 7946 keeps on one side of the antimeridian."""
    if not isinstance(geometry, dict):
        raise GeometryError("the geometry is not an object")
    kind, coordinates = geometry.get("type"), geometry.get("coordinates")
    if kind == "GeometryCollection":
        members = geometry.get("geometries")
        if not isinstance(members, list):
            raise GeometryError("a GeometryCollection needs 'geometries'")
        for member in members:
            yield from _parts(member)
    elif kind == "Point":
        yield [_point(coordinates)]
    elif kind == "MultiPoint":
        for position in _list(coordinates):
            yield [_point(position)]
    elif kind == "LineString":
        yield [_point(position) for position in _list(coordinates)]
    elif kind == "MultiLineString":
        for line in _list(coordinates):
            yield [_point(position) for position in _list(line)]
    elif kind == "Polygon":
        yield [_point(position) for ring in _list(coordinates) for position in _list(ring)]
    elif kind == "MultiPolygon":
        for polygon in _list(coordinates):
            yield [_point(position) for ring in _list(polygon) for position in _list(ring)]
    else:
        raise GeometryError(f"unknown geometry type {str(kind)[:40]!r}")


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise GeometryError("coordinates must be arrays")
    return value


def _point(value: Any) -> tuple[float, float]:
    if not (isinstance(value, list) and len(value) >= 2 and all(_is_number(v) for v in value[:2])):
        raise GeometryError("a position must be an array of at least two numbers")
    return float(value[0]), float(value[1])


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
