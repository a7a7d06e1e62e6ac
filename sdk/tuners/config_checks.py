"""Field checks shared by the configs of layer-wrapping methods (IA3, LoHa, LoKr)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError


def normalise_name_lists(config: Any, *names: str) -> None:
    """Sets/tuples -> sorted lists (PEFT writes sets as lists); check each is None, a regex or names."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, (set, frozenset, tuple)):
            value = sorted(value)
            setattr(config, name, value)
        regex_ok = name != "modules_to_save"
        if not (value is None or (isinstance(value, str) and regex_ok)
                or (isinstance(value, list) and all(isinstance(v, str) for v in value))):
            raise ConfigError(f"`{name}` must be a list of module names" + (" or one regex" if regex_ok else "")
                              + f", got {value!r}")
        if isinstance(value, str):
            check_regex(f"`{name}`", value)
    if isinstance(getattr(config, "target_modules", None), list) and not config.target_modules:
        raise ConfigError("`target_modules` is an empty list; name at least one module")


def check_regex(what: str, pattern: str) -> None:
    """Refuse an invalid regular expression, naming where it came from."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{what} is not a valid regular expression: {exc}") from exc


def check_patterns(config: Any, *names: str) -> None:
    """``rank_pattern``-like fields: objects whose keys are valid regexes."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value or {}, Mapping):
            raise ConfigError(f"`{name}` must be an object mapping module patterns to values")
        setattr(config, name, dict(value or {}))
        for key in getattr(config, name):
            check_regex(f"{name} key {key!r}", key)


def check_number(config: Any, name: str, low: float | None = None, high: float | None = None) -> None:
    """A numeric field, optionally within [low, high)."""
    value = getattr(config, name)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ConfigError(f"`{name}` must be a number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value >= high):
        raise ConfigError(f"`{name}` must be in [{low}, {high}), got {value!r}")


def check_positive_int(what: str, value: Any) -> None:
    """Ranks and the like: a positive integer."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")


def check_layers(config: Any) -> None:
    """``layers_to_transform`` / ``layers_pattern`` combinations that PEFT refuses too."""
    if config.layers_to_transform is not None and isinstance(config.target_modules, str):
        raise ConfigError("`layers_to_transform` cannot be combined with a regex `target_modules` string")
    if config.layers_pattern and config.layers_to_transform is None:
        raise ConfigError("`layers_pattern` needs `layers_to_transform` (the layer indices to adapt)")
