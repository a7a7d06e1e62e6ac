"""What a version reference names (a number, a 40-hex commit or an alias), and when the version it names is
gone: the yank rules, shared by the ORM reads (:mod:`.service`) and the one-query reads (:mod:`.reads`)."""

from __future__ import annotations

import re
from typing import Any, Literal

from ...errors import Gone, NotFound, ServiceError
from ...names import COMMIT

#: A version reference that is a number (at most 19 ASCII digits, so int() is cheap) …
VERSION_NUMBER = re.compile(r"^[0-9]{1,19}\Z")
#: … and the largest version number there can be (``adapter_version.version`` is a 32-bit integer).
MAX_VERSION = 2**31 - 1
RefKind = Literal["number", "commit", "alias"]


def version_ref(ref: str | int | None, owner: str) -> tuple[RefKind, str]:
    """What a version reference is: ``("number", digits)``, ``("commit", hex)`` or ``("alias", name)``
    (``latest`` when ``ref`` is None); a number past the column's range is not found, without asking."""
    ref_s = "latest" if ref is None or ref == "" else str(ref)
    if VERSION_NUMBER.match(ref_s):  # ASCII digits only: '²' is a digit to str.isdigit, not to int()
        if int(ref_s) > MAX_VERSION:
            raise NotFound(f"{owner} has no version {ref_s!r}")
        return "number", ref_s
    return ("commit" if COMMIT.match(ref_s) else "alias"), ref_s


def is_latest(ref: str | int | None) -> bool:
    """Whether ``ref`` asks for the newest version."""
    return ref is None or ref in ("", "latest")


def missing(owner: str, ref: str | int | None, next_version: int, not_found: type[NotFound] = NotFound
            ) -> ServiceError:
    """The error for a reference that names no version of ``owner``: 410 Gone for ``latest`` once every
    version there was is yanked or purged, ``not_found`` (a 404) otherwise."""
    if is_latest(ref) and next_version > 1:
        return Gone(f"every version of {owner} is yanked or purged")
    return not_found(f"{owner} has no version {'latest' if is_latest(ref) else str(ref)!r}")


def yank_info(v: Any) -> dict[str, Any] | None:
    """When, by whom and why a version was yanked (and whether its files were purged); None if it was not."""
    if v.yanked_at is None:
        return None
    return {"at": v.yanked_at.isoformat(), "by": v.yanked_by, "reason": v.yank_reason or "",
            "purged": v.purged_at is not None}


def refuse_yanked(owner: str, v: Any, yanked_ok: bool = False) -> None:
    """410 Gone with the reason when version ``v`` of ``owner`` is yanked (unless ``yanked_ok``)."""
    if v.yanked_at is not None and not yanked_ok:
        why = v.yank_reason or "no reason given"
        raise Gone(f"{owner}@{v.version} was yanked: {why}", extra={"version": v.version, "yanked": yank_info(v)})


__all__ = ["MAX_VERSION", "VERSION_NUMBER", "RefKind", "is_latest", "missing", "refuse_yanked", "version_ref",
           "yank_info"]
