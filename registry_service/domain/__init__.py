"""One package per area of the registry. Importing any of them registers the session hooks that
make every write an audit event and queue its webhook deliveries (:mod:`.events`)."""

from . import events as _events  # noqa: F401
