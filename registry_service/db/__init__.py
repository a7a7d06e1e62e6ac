"""Database models and session wiring."""
