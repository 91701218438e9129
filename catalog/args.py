"""The values people type on the command line, parsed once with one set of rules.

``parse_bbox`` (``W,S,E,N`` in degrees) and ``parse_years`` (``2024``, ``2020,2024``,
``2017-2025``) serve every command (publish filters, sample generators, the demo); errors are
:class:`InputError` naming the option and the value, so the CLI prints one clear line.
"""

from __future__ import annotations

from tessera_stac.catalog.errors import InputError

Bbox = tuple[float, float, float, float]


def parse_bbox(text: str, *, what: str = "--bbox", on_grid: bool = False) -> Bbox:
    """``W,S,E,N`` -> floats, with W < E and S < N inside lon/lat bounds.

    Args:
        text: four comma-separated numbers.
        what: the option's name, for messages.
        on_grid: also require every edge on the 0.1-degree tile grid.

    Raises:
        InputError: not four numbers, an empty or inverted box, out of bounds, off the grid.
    """
    try:
        west, south, east, north = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"{what} {text!r}: expected four numbers W,S,E,N") from None
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise InputError(f"{what} {text!r}: expected W < E and S < N within lon/lat bounds")
    if on_grid:
        for value in (west, south, east, north):
            if abs(value * 10 - round(value * 10)) > 1e-6:
                raise InputError(f"{what} {text!r}: {value:g} is not on the 0.1-degree tile grid")
    return west, south, east, north


def parse_years(text: str, *, what: str = "--years") -> tuple[int, ...]:
    """``2024``, ``2020,2024`` or ``2017-2025`` (or a mix) -> sorted distinct years.

    Raises:
        InputError: anything else, or no year at all.
    """
    years: set[int] = set()
    try:
        for part in (p.strip() for p in text.split(",")):
            if "-" in part[1:]:
                first, last = (int(v) for v in part.split("-", 1))
                if first > last:
                    raise ValueError(part)
                years.update(range(first, last + 1))
            elif part:
                years.add(int(part))
    except ValueError:
        raise InputError(
            f"{what} {text!r}: years must look like 2024, 2020,2024 or 2017-2025"
        ) from None
    if not years:
        raise InputError(f"{what} {text!r}: no year given")
    return tuple(sorted(years))
