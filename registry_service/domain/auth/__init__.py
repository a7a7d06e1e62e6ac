"""Authentication: tokens and permissions."""
