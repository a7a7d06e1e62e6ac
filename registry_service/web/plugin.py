"""``WebUIPlugin``: mounts the UI on the app: page routes, static files, the Jinja template
engine (autoescaping on), and browser-aware error pages. List it after the problem-details
plugin, whose handlers it wraps."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import Router
from litestar.config.app import AppConfig
from litestar.contrib.jinja import JinjaTemplateEngine
from litestar.datastructures import CacheControlHeader
from litestar.di import Provide
from litestar.plugins import InitPlugin
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from sdk.methods import method_name

from ..settings import Settings
from .compare import ComparePages
from .composition_pages import CompositionPages
from .edit import EditPages
from .errors import page_crash, wrap_handlers
from .files import FilePages
from .headers import page_response_headers
from .jobs import JobPages
from .lifecycle import LifecyclePages
from .pages import PageController, SignInPages
from .session import csrf_config, provide_viewer
from .views import ago, author, human_count, human_size

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


def template_environment() -> Environment:
    """Jinja with autoescaping for every template (HTML and the inline SVG alike)."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["size"] = human_size
    env.filters["count"] = human_count
    env.filters["short"] = lambda commit: (commit or "")[:10]
    env.filters["date"] = lambda t: t.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if t else "–"
    env.filters["ago"] = ago
    env.globals["author"] = author
    env.globals["method_name"] = method_name
    return env


def web_router() -> Router:
    """The pages, with the signed-in viewer (from the cookie) as a dependency."""
    return Router(path="/", route_handlers=[PageController, FilePages, EditPages, JobPages, SignInPages,
                                            CompositionPages, LifecyclePages, ComparePages],
                  dependencies={"viewer": Provide(provide_viewer)}, exception_handlers={Exception: page_crash},
                  response_headers=page_response_headers(), include_in_schema=False)


class WebUIPlugin(InitPlugin):
    """The web UI (``settings``: for the CSRF protection of its forms)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.route_handlers.extend([
            web_router(),
            create_static_files_router(path="/static", directories=[STATIC], name="static",
                                       cache_control=CacheControlHeader(max_age=3600, public=True)),
        ])
        app_config.template_config = TemplateConfig(
            engine=JinjaTemplateEngine.from_environment(template_environment()))
        app_config.exception_handlers = wrap_handlers(app_config.exception_handlers)
        app_config.csrf_config = csrf_config(self.settings)
        return app_config
