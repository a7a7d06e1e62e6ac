"""Logging of the API and worker processes: plain text (the default) or one JSON object per line
(``ADAPTER_REGISTRY_LOG_FORMAT=json``, python-json-logger), for log shippers.

JSON lines carry ``time``, ``level``, ``logger``, ``message``, ``pid``, the ``request_id`` of the
request being served (``-`` outside a request), any fields the code logs as ``extra`` (a merge job's
``job_id``…), ``exc_info`` for tracebacks, and for uvicorn's access lines ``client``, ``method``,
``path`` and ``status``.

The request id is the one :mod:`registry_service.request_ids` keeps for the request being handled
(``-`` outside a request), added to every record by its :class:`~registry_service.request_ids.RequestIdFilter`.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import TYPE_CHECKING, Any, Literal

from .request_ids import LOG_FORMAT, RequestIdFilter

if TYPE_CHECKING:
    from litestar.logging.config import LoggingConfig

LogFormat = Literal["text", "json"]


class ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` (or ``sys.stdout``) is when a record comes, not when logging was
    set up: a replaced stream (test capture, a closed pipe) never receives records meant for its successor."""

    def __init__(self, to: str = "stderr") -> None:
        self.to = to
        super().__init__()

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return getattr(sys, self.to)

    @stream.setter
    def stream(self, value: Any) -> None:
        """The stream is looked up at every record; nothing to keep."""


class AccessFieldsFilter(logging.Filter):
    """Names the parts of uvicorn's access lines (client, method, path, status) as record fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            record.client, record.method, record.path, _version, record.status = args
        return True


def log_config(level: str = "info", fmt: LogFormat = "text") -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` for our loggers and uvicorn's (uvicorn takes it as ``log_config``)."""
    if fmt == "json":
        formatter: dict[str, Any] = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": ["asctime", "levelname", "name", "message", "process"],
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"},
            "datefmt": "%Y-%m-%dT%H:%M:%S%z",
        }
        access = formatter
    else:
        formatter = {"format": LOG_FORMAT}
        access = {"()": "uvicorn.logging.AccessFormatter",
                  "fmt": '%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(client_addr)s "%(request_line)s" '
                         '%(status_code)s',
                  "use_colors": False}
    handler = {"()": ConsoleHandler, "filters": ["request_id", "access_fields"]}
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}, "access_fields": {"()": AccessFieldsFilter}},
        "formatters": {"default": formatter, "access": access},
        "handlers": {"default": {**handler, "formatter": "default"},
                     "access": {**handler, "formatter": "access", "to": "stdout"}},
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": upper, "propagate": False},
            "uvicorn.error": {"level": upper},
            "uvicorn.access": {"handlers": ["access"], "level": upper, "propagate": False},
            "alembic": {"level": "WARNING"},  # one line per migration plugin at every start otherwise
        },
        "root": {"handlers": ["default"], "level": upper},
    }


def litestar_logging(level: str = "info", fmt: LogFormat = "text") -> LoggingConfig:
    """The same configuration for Litestar, which applies its logging configuration when an app is made
    (its default would put the root logger on a format of its own, also in JSON mode)."""
    from litestar.logging.config import LoggingConfig

    cfg = log_config(level, fmt)
    loggers = {**cfg["loggers"], "litestar": {"handlers": ["default"], "level": level.upper(), "propagate": False}}
    # Unexpected errors are logged once, by the app's own handler (failures.handle_unexpected). The root
    # logger is left to the process (serve and worker set it up with this same configuration): an app made
    # inside another program (tests, a notebook) does not take over that program's logging.
    return LoggingConfig(filters=cfg["filters"], formatters=cfg["formatters"], handlers=cfg["handlers"],
                         loggers=loggers, configure_root_logger=False, log_exceptions="never")


def configure_logging(level: str = "info", fmt: LogFormat = "text") -> None:
    """Set up logging for a process that does not run uvicorn (the merge worker)."""
    logging.config.dictConfig(log_config(level, fmt))


__all__ = ["LogFormat", "configure_logging", "litestar_logging", "log_config"]
