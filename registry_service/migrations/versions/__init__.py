"""Alembic revisions (files named NNNN_*.py; Alembic skips this one)."""
