"""MkDocs hook: pages generated from the code at build time, and the checks that fail a strict build
when the code and the documentation drift apart.

Generated (never committed): the SDK reference (one mkdocstrings entry for every name in
``sdk.__all__``), the error tree, both command lines (typer's own Markdown), the REST API (the
service's OpenAPI document, from ``create_app``'s schema, no network) and the settings tables (the
pydantic-settings models and their ``#:`` comments). A public SDK name without a docstring, or a setting
without a comment, is a warning, which ``mkdocs build --strict`` turns into a failed build.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import re
import tempfile
import textwrap
import warnings
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.generate")

#: Sections of the SDK reference: a name goes to the first section whose test its module passes.
SDK_SECTIONS: list[tuple[str, str]] = [
    ("Registry client", "sdk"),  # functions defined in sdk/__init__.py itself
    ("Registry client", "sdk.client"),
    ("Models", "sdk.model"),
    ("Method configs", "sdk.tuners."),
    ("Methods table", "sdk.methods"),
    ("Configs (base)", "sdk.config"),
    ("Training", "sdk.training"),
    ("Training", "sdk.integrations"),
    ("Merging", "sdk.merg"),
    ("torch.compile and hot-swap", "sdk.hotswap"),
    ("Quantization", "sdk.kbit"),
    ("Quantization", "sdk.quantization"),
    ("Errors", "sdk.errors"),
]


def undocumented(names: list[str], namespace: Any) -> list[str]:
    """The names whose object has no docstring of its own (a class inheriting one does not count, nor the
    signature a dataclass is given in place of one)."""
    out = []
    for name in names:
        obj = getattr(namespace, name)
        doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
        generated = isinstance(obj, type) and dataclasses.is_dataclass(obj) and doc and doc.startswith(f"{name}(")
        if not (doc and doc.strip()) or generated:  # a dataclass without one gets its signature as __doc__
            out.append(name)
    return out


def _section(obj: Any) -> str:
    module = getattr(obj, "__module__", "") or ""
    for title, prefix in SDK_SECTIONS:
        if module == prefix or (prefix != "sdk" and module.startswith(prefix)):
            return title
    return "Other"


def sdk_reference() -> str:
    """``::: sdk.Name`` for every name in ``sdk.__all__``, grouped by where it is defined."""
    import sdk

    for name in undocumented(list(sdk.__all__), sdk):
        log.warning("sdk.%s is public (in sdk.__all__) but has no docstring", name)
    groups: dict[str, list[str]] = {}
    for name in sdk.__all__:
        groups.setdefault(_section(getattr(sdk, name)), []).append(name)
    order = list(dict.fromkeys([t for t, _ in SDK_SECTIONS] + ["Other"]))
    lines = ["# SDK reference", "",
             "Every public name of the `sdk` package (`sdk.__all__`), generated from the docstrings. "
             "The registry client's classes are under [Client reference](client.md).", ""]
    for title in order:
        if title not in groups:
            continue
        lines += [f"## {title}", ""]
        for name in sorted(groups[title], key=str.lower):
            lines += [f"::: sdk.{name}", "    options:", "      heading_level: 3", ""]
    return "\n".join(lines)


def client_reference() -> str:
    """The registry client package (``sdk.client.__all__``)."""
    import sdk.client

    for name in undocumented(list(sdk.client.__all__), sdk.client):
        log.warning("sdk.client.%s is public (in sdk.client.__all__) but has no docstring", name)
    lines = ["# Client reference", "", "`sdk.client`: the explicit client behind `sdk.push`, `sdk.pull`, `sdk.load` "
             "and `sdk.merge`, its cache and its errors.", ""]
    for name in sorted(sdk.client.__all__, key=str.lower):
        lines += [f"::: sdk.client.{name}", "    options:", "      heading_level: 2", ""]
    return "\n".join(lines)


def error_tree() -> str:
    """The exception classes of the SDK and its client as an indented tree, then their reference."""
    import sdk
    import sdk.client
    import sdk.errors

    classes = {c for mod in (sdk.errors, sdk.client) for c in vars(mod).values()
               if isinstance(c, type) and issubclass(c, BaseException) and c.__module__.startswith("sdk")}
    roots = sorted((c for c in classes if not any(b in classes for b in c.__bases__)), key=lambda c: c.__name__)

    def public(c: type) -> str:
        """The name a user imports the class by."""
        for package in (sdk, sdk.client):
            if c.__name__ in package.__all__ and getattr(package, c.__name__) is c:
                return f"{package.__name__}.{c.__name__}"
        return f"{c.__module__}.{c.__name__}"

    lines = ["# Errors", "",
             "Every error the SDK and its client raise derives from `sdk.AdapterError`; most also derive from the "
             "built-in exception they refine (`ValueError`, `KeyError`, `RuntimeError`), so existing `except` "
             "clauses keep working. Each message names the problem and the fix.", "", "```text"]

    def walk(c: type, depth: int) -> None:
        builtins = [b.__name__ for b in c.__bases__ if b not in classes and b.__module__ == "builtins"]
        extra = f"  ({', '.join(builtins)})" if builtins and depth else ""
        lines.append("    " * depth + public(c) + extra)
        for sub in sorted((s for s in classes if c in s.__bases__), key=lambda s: s.__name__):
            walk(sub, depth + 1)

    for root in roots:
        walk(root, 0)
    lines += ["```", "", "::: sdk.errors", "    options:", "      show_root_heading: false", "      heading_level: 2",
              "      show_bases: true", ""]
    return "\n".join(lines)


def cli_reference() -> str:
    """Both command lines, from typer's own Markdown generator."""
    import typer
    import typer.cli

    from registry_service.cli import app as service_app
    from sdk.cli import app as client_app

    out = ["# Command-line reference", "",
           "Generated from the commands themselves (`--help` prints the same). "
           "`adapters` is the client ([guide](../client.md)); `adapter-registry` runs the service "
           "([guide](../service/running.md)).", ""]
    for name, app in (("adapters", client_app), ("adapter-registry", service_app)):
        command = typer.main.get_command(app)
        text = typer.cli.get_docs_for_click(obj=command, ctx=typer.models.Context(command), name=name, title=name)
        out.append(re.sub(r"^(#+) ", r"\1# ", text, flags=re.M))  # one level down: the page has its title
    return "\n".join(out)


def _schema_type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "oneOf" in schema or "anyOf" in schema:
        return " or ".join(_schema_type(s) for s in schema.get("oneOf", schema.get("anyOf", [])))
    if schema.get("enum"):
        return "one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_schema_type(schema.get('items', {}))}"
    return " or ".join(kind) if isinstance(kind, list) else str(kind)


def _link(type_name: str, schemas: dict[str, Any]) -> str:
    """A type name, linked to its section when it is one of the document's schemas."""
    words = type_name.split(" ")
    return " ".join(f"[{w}](#{w.lower()})" if w in schemas else w for w in words)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "&#124;")


def rest_reference() -> str:
    """The REST API, rendered from the OpenAPI document of ``create_app`` (no server, no database)."""
    from registry_service.app import create_app
    from registry_service.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        schema = create_app(Settings(data_dir=tmp)).openapi_schema.to_schema()
    out = ["# REST API reference", "",
           f"{schema['info']['title']}, generated from the service's OpenAPI document (the same one a running "
           "service serves at `/schema/openapi.json`, browsable at `/schema`). Errors are RFC 9457 problem details "
           "(`application/problem+json`). Authentication: `Authorization: Bearer <token>`.", ""]
    schemas: dict[str, Any] = schema.get("components", {}).get("schemas", {})
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in schema["paths"].items():
        for method, op in item.items():
            if method in {"get", "put", "post", "patch", "delete", "head"}:
                by_tag.setdefault((op.get("tags") or ["other"])[0], []).append((method.upper(), path, op))
    for tag in sorted(by_tag):
        out += [f"## {tag}", ""]
        for method, path, op in sorted(by_tag[tag], key=lambda t: (t[1], t[0])):
            out += [f"### `{method} {path}`", ""]
            if op.get("summary"):
                out += [_cell(op["summary"]), ""]
            if op.get("description"):
                out += [op["description"].strip(), ""]
            params = op.get("parameters") or []
            if params:
                out += ["| parameter | in | type | required | description |", "|---|---|---|---|---|"]
                for p in params:
                    out.append(f"| `{p['name']}` | {p['in']} | {_cell(_schema_type(p.get('schema', {})))} | "
                               f"{'yes' if p.get('required') else 'no'} | {_cell(p.get('description', ''))} |")
                out.append("")
            body = op.get("requestBody")
            if body:
                kinds = ", ".join(f"`{k}` ({_link(_schema_type(v.get('schema', {})), schemas)})"
                                  for k, v in body.get("content", {}).items())
                out += [f"Request body: {kinds}.", ""]
            responses = op.get("responses") or {}
            if responses:
                out += ["| status | body | description |", "|---|---|---|"]
                for code, resp in sorted(responses.items()):
                    bodies = ", ".join(_link(_schema_type(v.get("schema", {})), schemas)
                                       for v in (resp.get("content") or {}).values())
                    out.append(f"| {code} | {bodies} | {_cell(resp.get('description', ''))} |")
                out.append("")
    out += ["## Schemas", ""]
    for name, spec in sorted(schemas.items()):
        out += [f"### {name}", ""]
        if spec.get("description"):
            out += [_cell(spec["description"]), ""]
        props = spec.get("properties") or {}
        required = set(spec.get("required") or [])
        if props:
            out += ["| field | type | required | description |", "|---|---|---|---|"]
            for field, prop in props.items():
                out.append(f"| `{field}` | {_cell(_link(_schema_type(prop), schemas))} | "
                           f"{'yes' if field in required else 'no'} | {_cell(prop.get('description', ''))} |")
            out.append("")
        elif spec.get("enum"):
            out += ["One of " + ", ".join(f"`{v}`" for v in spec["enum"]) + ".", ""]
    out += ["## The document", "", "??? note \"openapi.json\"", "", "    ```json"]
    out += ["    " + line for line in json.dumps(schema, indent=1, sort_keys=True).splitlines()]
    out += ["    ```", ""]
    return "\n".join(out)


def field_comments(cls: type) -> dict[str, str]:
    """The ``#:`` comment lines right above each field of a settings class."""
    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in textwrap.dedent(inspect.getsource(cls)).splitlines():
        stripped = line.strip()
        field = re.match(r"^    ([a-z_][a-z0-9_]*)\s*:", line)
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        if field and pending:
            comments[field.group(1)] = " ".join(pending)
        pending = []
    return comments


BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "length ≥", "max_length": "length ≤"}


def settings_reference() -> str:
    """Both settings models as tables: variable, type, default, what."""
    from pydantic_core import PydanticUndefined

    from registry_service.settings import Settings, WorkerSettings

    out = ["# Settings reference", "",
           "Generated from `registry_service/settings.py`. Every setting is an environment variable; command-line "
           "options win. `adapter-registry config` prints the effective values (secrets masked) and exits 2 when "
           "one does not validate.", ""]
    for cls, title in ((Settings, "Service (`adapter-registry serve`, `migrate`, `token`, `worker`)"),
                       (WorkerSettings, "Merge workers (`adapter-registry worker`)")):
        comments = field_comments(cls)
        out += [f"## {title}", "", "| variable | type | default | bounds | what |", "|---|---|---|---|---|"]
        for name, field in cls.model_fields.items():
            what = comments.get(name, "")
            if not what:
                log.warning("setting %s.%s has no '#:' comment: the settings reference would not say what it is",
                            cls.__name__, name)
            default = "computed" if field.default is PydanticUndefined else repr(field.default)
            bounds = ", ".join(f"{sign} {getattr(m, k)}" for m in field.metadata for k, sign in BOUNDS.items()
                               if getattr(m, k, None) is not None)
            annotation = re.sub(r"typing\.|pathlib\.", "", str(field.annotation)).replace("NoneType", "None")
            annotation = re.sub(r"<class '(\w+)'>", r"\1", annotation).replace(" | ", " or ")
            out.append(f"| `{cls.env_name(name)}` | `{_cell(annotation)}` | `{_cell(default)}` | {_cell(bounds)} | "
                       f"{_cell(what)} |")
        out.append("")
    return "\n".join(out)


GENERATED = {
    "reference/sdk.md": sdk_reference,
    "reference/client.md": client_reference,
    "reference/errors.md": error_tree,
    "reference/cli.md": cli_reference,
    "reference/rest-api.md": rest_reference,
    "reference/settings.md": settings_reference,
}


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the generated pages (the libraries' deprecation warnings while importing are not ours to fix here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path, make in GENERATED.items():
            files.append(File.generated(config, path, content=make()))
    return files


_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):<code>~?([^<]*)</code>")


def on_page_content(html: str, **_: Any) -> str:
    """Docstrings are written with Sphinx roles (``:class:`X```); show them as plain code names."""
    return _ROLE.sub(r"<code>\1</code>", html)
