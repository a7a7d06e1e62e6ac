"""Adapter methods, one subpackage or module per method family; importing registers them."""

from . import lora  # noqa: F401
