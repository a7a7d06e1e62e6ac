"""Merged versions never reveal inputs their reader cannot read.

The rule (README, "Visibility is exact"): a merged version's weights are readable by whoever can read
its adapter (the private-input rule makes every merge of a private input private, checked at submit
and again at publish). What *names* an input is shown only to readers who can read that input:

- ``parents`` entries (version JSON, lineage JSON, the pages): an unreadable input becomes
  ``{"redacted": true, "weight": …}`` (its adapter, version and commit are left out);
- the files the merge job wrote that name its inputs, ``merge_recipe.json`` and ``README.md``, are
  withheld from such a reader: left out of file lists (REST, Hub ``tree``/``siblings``, pages) and 404
  on download, with a message that says why;
- merge jobs' ``inputs`` likewise (:func:`redact_inputs`).

An input adapter that no longer exists counts as unreadable. Because the answer depends on the
reader, a merged version with any non-public input is never publicly cacheable (:mod:`.caching`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from ...db.models import Adapter, AdapterVersion, File
from ...db.session import read_once
from ..auth.tokens import Principal
from .reads import FileRow, VersionRow

#: Files of a merged version that name its inputs (written by the merge job).
NAMING_FILES = frozenset({"merge_recipe.json", "README.md"})
#: Parameters of an input that say nothing about which input it is.
_KEPT = ("weight", "combination_type", "density")


def parent_adapter(entry: Any) -> str | None:
    """``ns/name`` of a parents entry (a dict with ``adapter``/``name``, or an ``ns/name@ref`` string)."""
    if isinstance(entry, str):
        return entry.partition("@")[0] or None
    if isinstance(entry, Mapping):
        name = entry.get("adapter") or entry.get("name")
        return str(name) if name else None
    return None


@dataclass(frozen=True)
class InputsView:
    """What one reader may see of the inputs of some versions."""

    #: ``ns/name`` of inputs the reader cannot read
    hidden: frozenset[str] = field(default_factory=frozenset)
    #: every input is public (the answers are the same for every reader)
    all_public: bool = True

    def hides(self, parents: Iterable[Any]) -> bool:
        """Whether any of these parents is hidden from the reader."""
        return any(parent_adapter(p) in self.hidden for p in parents or [])


async def inputs_view(db: AsyncSession | AsyncEngine, viewer: Principal,
                      versions: Iterable[AdapterVersion | VersionRow]) -> InputsView:
    """Which inputs of ``versions`` ``viewer`` cannot read (one query for all of them, and none when no
    version has parents). ``db``: a session, or the reader engine (one autocommit round trip)."""
    return await inputs_view_of(db, viewer, [p for v in versions for p in (v.parents or [])])


def _inputs_statement(names: set[str]) -> Select[Any] | None:
    pairs = [n.split("/", 1) for n in names if "/" in n]
    if not pairs:
        return None
    return select(Adapter.namespace, Adapter.name, Adapter.visibility).where(
        or_(*(and_(Adapter.namespace == ns, Adapter.name == name) for ns, name in pairs)))


async def inputs_view_of(db: AsyncSession | AsyncEngine, viewer: Principal, entries: Iterable[Any]) -> InputsView:
    """Which of these parents (or merge-job inputs) ``viewer`` cannot read; ``db`` as :func:`inputs_view`."""
    names = {n for p in entries if (n := parent_adapter(p))}
    if not names:
        return InputsView()
    statement = _inputs_statement(names)
    rows: Iterable[Any] = []
    if statement is not None:
        rows = (await read_once(db, statement, {}) if isinstance(db, AsyncEngine)
                else (await db.execute(statement)).all())
    found = {f"{ns}/{name}": visibility for ns, name, visibility in rows}
    readable = {n for n, vis in found.items() if vis == "public" or viewer.can_read(n.split("/", 1)[0])}
    return InputsView(frozenset(names - readable), all(found.get(n) == "public" for n in names))


def redact_parents(parents: Iterable[Any], view: InputsView) -> list[Any]:
    """``parents`` with every entry naming a hidden input replaced by ``{"redacted": true, ...}``."""
    out: list[Any] = []
    for p in parents or []:
        if parent_adapter(p) in view.hidden:
            kept = {k: p[k] for k in _KEPT if isinstance(p, Mapping) and k in p}
            out.append({"redacted": True, **kept})
        else:
            out.append(p)
    return out


def redact_inputs(inputs: Iterable[Mapping[str, Any]], view: InputsView) -> list[Any]:
    """A merge job's ``inputs``, hidden ones redacted like parents."""
    return redact_parents(list(inputs), view)


def withheld(version: AdapterVersion | VersionRow, view: InputsView) -> frozenset[str]:
    """Filenames of ``version`` this reader may not see (they name inputs it cannot read)."""
    return NAMING_FILES if view.hides(version.parents or []) else frozenset()


def visible_files(version: AdapterVersion | VersionRow, view: InputsView) -> list[File | FileRow]:
    """``version``'s files less the withheld ones."""
    hidden = withheld(version, view)
    return [f for f in version.files if f.filename not in hidden]


def withheld_message(full_name: str, version: int, filename: str) -> str:
    """Why a file of a merged version is not served to this reader."""
    return (f"{full_name}@{version} has no file {filename!r} that you can read: it names inputs of this merged "
            "version that your token cannot read")


__all__ = ["NAMING_FILES", "InputsView", "inputs_view", "inputs_view_of", "parent_adapter", "redact_inputs",
           "redact_parents", "visible_files", "withheld", "withheld_message"]
