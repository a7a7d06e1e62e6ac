"""The adapter registry service (built in later issues)."""
