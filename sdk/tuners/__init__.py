"""Adapter methods, one subpackage or module per method family; importing registers them."""

from . import adalora, ia3, loha, lokr, lora, prompt  # noqa: F401
