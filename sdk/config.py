"""Base adapter config: a dataclass whose JSON form is PEFT's ``adapter_config.json``.

Loading is tolerant of the future and strict about the math: keys we do not know are kept
(and written back on save) with a warning, while known keys that would change the adapter's
output in ways we do not implement raise :class:`~sdk.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

from .errors import ConfigError

CONFIG_NAME = "adapter_config.json"


class UnknownConfigKeyWarning(UserWarning):
    """A config key that this SDK does not know was kept but ignored."""


@dataclasses.dataclass
class AdapterConfig:
    """Fields every method shares. Subclasses add their own and set ``peft_type``."""

    peft_type: ClassVar[str] = ""
    #: The method's name as people write it ("LoRA", "IA³"); ``peft_type`` when empty.
    display_name: ClassVar[str] = ""
    #: Known keys that we accept but do not act on (harmless at their usual values).
    ignored_keys: ClassVar[frozenset[str]] = frozenset({"peft_version", "auto_mapping"})
    #: Known keys that change the math: key -> predicate "this value needs support we lack".
    unsupported: ClassVar[Mapping[str, Callable[[Any], bool]]] = {}

    base_model_name_or_path: str | None = None
    revision: str | None = None
    task_type: str | None = None
    inference_mode: bool = False
    extra: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check field values; raise :class:`ConfigError` naming the field and the fix."""

    @classmethod
    def method_name(cls, raw: Mapping[str, Any] | None = None) -> str:
        """The method's readable name, for a raw ``adapter_config.json`` dict when given (a variant such
        as DoRA may depend on it)."""
        return cls.display_name or cls.peft_type

    # --- JSON round trip -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The PEFT-compatible dict: every field, sets as sorted lists, ``peft_type`` included."""
        out: dict[str, Any] = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            out[f.name] = _jsonable(getattr(self, f.name))
        out["peft_type"] = self.peft_type
        return out

    def to_json(self) -> str:
        """JSON text as PEFT writes it: sorted keys, indent 2."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build from a PEFT-style dict; warn on unknown keys, refuse unsupported math."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"an adapter config must be a JSON object, got {type(data).__name__}")
        peft_type = data.get("peft_type", cls.peft_type)
        if peft_type != cls.peft_type:
            raise ConfigError(f"config has peft_type={peft_type!r}, expected {cls.peft_type!r}")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        problems: list[str] = []
        unknown: list[str] = []
        for key, value in data.items():
            if key == "peft_type":
                continue
            if key in names:
                kwargs[key] = value
                continue
            extra[key] = value
            check = cls.unsupported.get(key)
            if check is not None:
                if check(value):
                    problems.append(f"{key}={value!r}")
            elif key not in cls.ignored_keys:
                unknown.append(key)
        if problems:
            raise ConfigError(
                f"this {cls.peft_type} config uses features that change the adapter's output and that "
                f"this SDK does not implement: {', '.join(problems)}. Loading it anyway would give wrong "
                "results; re-train or convert the adapter without them."
            )
        if unknown:
            warnings.warn(
                f"adapter config keys not known to this SDK were kept but ignored: {sorted(unknown)} "
                "(written by a newer PEFT?)",
                UnknownConfigKeyWarning,
                stacklevel=2,
            )
        try:
            return cls(**kwargs, extra=extra)
        except (TypeError, ValueError) as exc:  # wrong value types surface here
            raise ConfigError(f"invalid {cls.peft_type} config: {exc}") from exc

    def save(self, directory: str | Path) -> Path:
        """Write ``adapter_config.json`` into ``directory``."""
        path = Path(directory) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    def copy(self, **changes: Any) -> Self:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def read_config_dict(directory: str | Path) -> dict[str, Any]:
    """Read and parse ``adapter_config.json``; errors name the file and the problem."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(f"no {CONFIG_NAME} in {directory}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    if "peft_type" not in data:
        raise ConfigError(f"{path} has no 'peft_type'; cannot tell which adapter method it is for")
    return data
