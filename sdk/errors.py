"""The SDK's exception tree.

Every error the SDK raises on purpose derives from :class:`AdapterError`, so callers can catch
one class. The tree::

    AdapterError
    ├── ConfigError                 a config that does not parse, or asks for math we do not support
    ├── TargetingError              the config selects no module, or a module we cannot adapt
    │   ├── TargetModulesNotFoundError
    │   └── UnsupportedLayerError
    ├── AdapterNameError            unknown, duplicate or reserved adapter names
    ├── AdapterStateError           an operation that the model's current state forbids
    │   └── MixedBatchError         a bad ``adapter_names=[...]`` request
    ├── MergeError                  merging would produce NaN/Inf, or cannot be done
    └── FormatError                 adapter files that cannot be read or do not fit the model
        ├── PickleRefusedError      a pickle file (``adapter_model.bin``); we never unpickle
        └── ValidationFailed        an adapter does not fit its base model; ``.problems`` lists why

Several classes also derive from the matching builtin (``ValueError``, ``KeyError``…) so code
written against PEFT's exceptions keeps working.
"""

from __future__ import annotations


class AdapterError(Exception):
    """Base class of every error raised by the SDK."""


class ConfigError(AdapterError, ValueError):
    """An adapter config is invalid, or uses a feature this SDK does not implement."""


class TargetingError(AdapterError, ValueError):
    """The config's module selection does not fit the model."""


class TargetModulesNotFoundError(TargetingError):
    """No module of the model matches the config's ``target_modules``."""


class UnsupportedLayerError(TargetingError):
    """A selected module is of a type the method cannot adapt."""


class AdapterNameError(AdapterError, KeyError):
    """An adapter name is unknown, already taken, or reserved."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


class AdapterStateError(AdapterError, RuntimeError):
    """The requested operation is not allowed in the model's current state."""


class MixedBatchError(AdapterStateError, ValueError):
    """A per-sample ``adapter_names`` request is malformed or not allowed now."""


class MergeError(AdapterError, ValueError):
    """Merging an adapter into the base weights failed or was refused."""


class FormatError(AdapterError, ValueError):
    """Adapter files are missing, malformed, or do not fit the model."""


class PickleRefusedError(FormatError):
    """A pickle-based checkpoint was offered; the SDK never unpickles data."""


class ValidationFailed(FormatError):
    """An adapter's files do not fit its base model; ``problems`` lists every reason."""

    def __init__(self, problems: list) -> None:  # list[sdk.problems.Problem]
        self.problems = list(problems)
        first = self.problems[0].message if self.problems else "the adapter does not validate"
        more = f" (and {len(self.problems) - 1} more problems)" if len(self.problems) > 1 else ""
        super().__init__(first + more)
