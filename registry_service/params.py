"""Declared parameters shared by the routes: pages, part numbers, names and aliases, with the bounds
the service enforces, so that requests outside them are a 400 before any work and the OpenAPI
schema states them. The checks in :mod:`registry_service.names` stay the authority on names (reserved
namespaces, ``..``); the patterns here are the same character rules, stated for clients."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar.params import Parameter

from .names import ALIAS_PATTERN, PART_PATTERN
from .storage.base import MAX_PART_NUMBER

#: Largest file an upload session can declare: S3's largest object (5 TiB).
MAX_UPLOAD_BYTES = 5 * 2**40
#: A declared file size, as JSON request bodies give it.
FileSize = Annotated[int, msgspec.Meta(ge=0, le=MAX_UPLOAD_BYTES, description="exact size in bytes")]
#: A sha256 as 64 hex digits.
Sha256 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-fA-F]{64}$", description="sha256, 64 hex digits")]
#: Deepest page a listing serves (pages past the data are empty; past this they are refused).
MAX_PAGE = 100_000

Page = Annotated[int, Parameter(ge=1, le=MAX_PAGE, description="1-based page number")]
PartNumber = Annotated[int, Parameter(ge=1, le=MAX_PART_NUMBER, description="part number, 1..10000 (as S3)")]
NamePart = Annotated[str, Parameter(pattern=PART_PATTERN, min_length=1, max_length=96,
                                    description="a namespace or a name: letters, digits, '_', '.', '-'")]
AliasName = Annotated[str, Parameter(pattern=ALIAS_PATTERN, min_length=1, max_length=64,
                                     description="an alias: a letter, then letters, digits, '_', '.', '-'")]
PageSize = Annotated[int, Parameter(ge=1, le=100, description="items per page, 1..100")]
#: Most versions one listing answer holds.
MAX_VERSIONS_PER_PAGE = 1000
VersionsLimit = Annotated[int, Parameter(ge=1, le=MAX_VERSIONS_PER_PAGE, description="versions per answer, 1..1000")]
VersionCursor = Annotated[int | None, Parameter(ge=1, le=2**31 - 1, description=(
    "list versions below this number (the previous answer's next_before)"))]
#: Where a keyset-paged listing goes on: the ``next_cursor`` of the previous page (a row id).
Cursor = Annotated[int | None, Parameter(ge=1, le=2**63 - 1, description="next_cursor of the previous page")]


__all__ = ["MAX_PAGE", "MAX_UPLOAD_BYTES", "MAX_VERSIONS_PER_PAGE", "AliasName", "Cursor", "FileSize", "NamePart",
           "Page", "PageSize", "PartNumber", "Sha256", "VersionCursor", "VersionsLimit"]
