"""The row types of adapters, versions and files, for code outside the domain that names them in type hints
(the web pages read through the domain and never import the database layer themselves)."""

from __future__ import annotations

from ...db.models import Adapter, AdapterVersion, File

__all__ = ["Adapter", "AdapterVersion", "File"]
