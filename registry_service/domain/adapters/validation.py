"""Validating an upload before anything is stored: config, safetensors header, signature fit.

Everything here is synchronous and reads only what it needs through a ``read_at(offset,
length)`` callable (a local temp file or ranged reads of a staged object), so the service runs
it in a worker thread. Nothing is ever unpickled.
"""

from __future__ import annotations

from sdk.formats import PICKLE_NAMES
from sdk.summary import summarize
from sdk.validation import CONFIG_FILE, MAX_CONFIG_BYTES, CheckedWeights, check_weights, parse_config

from ...errors import reject

WEIGHTS_FILE = "adapter_model.safetensors"
README_FILE = "README.md"
ALLOWED_FILES = (CONFIG_FILE, WEIGHTS_FILE, README_FILE)
MAX_README_BYTES = 1 * 2**20


def check_filename(field_name: str, filename: str | None) -> None:
    """Refuse pickles, unknown files and filenames that try to escape (``../``, absolute, NUL)."""
    for name in (field_name, filename or ""):
        if name and ("/" in name or "\\" in name or name.startswith(".") or "\x00" in name or ".." in name):
            raise reject(f"invalid filename {name!r}: plain file names only", found=name)
    if field_name in PICKLE_NAMES or (filename or "").endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt")):
        raise reject(
            f"{filename or field_name} is a pickle checkpoint; the registry never loads pickles. Convert it with "
            "`safetensors.torch.save_file(torch.load(path, weights_only=True), 'adapter_model.safetensors', "
            "metadata={'format': 'pt'})` or save with PEFT's default safe_serialization=True",
            found=filename or field_name,
        )
    if field_name not in ALLOWED_FILES:
        raise reject(f"unexpected file {field_name!r}; an adapter version holds {list(ALLOWED_FILES)}",
                     found=field_name)




__all__ = [
    "ALLOWED_FILES",
    "CONFIG_FILE",
    "MAX_CONFIG_BYTES",
    "README_FILE",
    "WEIGHTS_FILE",
    "CheckedWeights",
    "check_filename",
    "check_weights",
    "parse_config",
    "summarize",
]
