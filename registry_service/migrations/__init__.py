"""Alembic environment and revisions of the registry's database, shipped inside the package so that an
installed wheel can migrate its database (``ALEMBIC_INI`` is the configuration Alembic reads)."""

from pathlib import Path

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")
