"""Durations people type (``90d``, ``12h``, ``30m``, ``3600``): token lifetimes on both command lines
(``adapters tokens create --expires-in``, ``adapter-registry token --expires-in``)."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^([0-9]{1,9})\s*([smhdw]?)\Z")
#: ``never``: no expiry (refused by a registry that sets a maximum lifetime).
NEVER = "never"


def parse_duration(text: str) -> int | None:
    """Seconds in ``text`` (a number with an optional unit s, m, h, d or w; seconds without one), or
    None for ``never``. Raises ValueError naming the accepted forms."""
    value = text.strip().lower()
    if value == NEVER:
        return None
    m = _DURATION.match(value)
    if m is None or int(m.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration: give a positive number with a unit s, m, h, d or w "
                         "(90d, 12h, 3600) or 'never'")
    return int(m.group(1)) * _UNITS[m.group(2) or "s"]


__all__ = ["NEVER", "parse_duration"]
