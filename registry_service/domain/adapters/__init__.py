"""Adapters: versions, files, aliases, uploads, search."""
