"""The web UI: server-rendered pages for browsing the registry (see :class:`WebUIPlugin`)."""

from .plugin import WebUIPlugin

__all__ = ["WebUIPlugin"]
