"""Base models: registration by signature or config.json, lookup, compatible adapters."""
