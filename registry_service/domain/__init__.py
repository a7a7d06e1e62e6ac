"""One package per domain area: controllers, services and schemas."""
