"""The adapter registry service: stores, checks and serves adapters and base models, and runs merge jobs."""
