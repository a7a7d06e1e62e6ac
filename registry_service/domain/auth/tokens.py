"""Bearer tokens: creation (shown once), storage as sha256 only, their life cycle (expiry,
revocation) and the caller's permissions.

Every check of a token, by the API (bearer header), the web UI (a session names its token) and the
merge workers (the submitter's token), goes through :func:`token_principal` on a row read from the
database. The API's bearer tokens are read through the one cache of :mod:`.token_cache`
(:func:`principal_for`, used from here and nowhere else): a revoked token is refused by the process
that revokes it at once and by every other within the cache's bound; an expired one everywhere at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from ...db.models import ApiToken
from ...db.session import read_once
from ...errors import BadRequest, Forbidden, Unauthorized
from .token_cache import TOKENS

SCOPES = ("read", "write", "admin")
TOKEN_PREFIX = "arg_"


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: anonymous, a namespace token, or a global admin."""

    token_id: int | None = None
    namespace: str | None = None
    scopes: frozenset[str] = frozenset()
    name: str = "anonymous"

    @property
    def authenticated(self) -> bool:
        return self.token_id is not None

    @property
    def is_admin(self) -> bool:
        """A global admin: admin scope with no namespace."""
        return self.namespace is None and "admin" in self.scopes

    def can_read(self, namespace: str) -> bool:
        """May see private content of ``namespace``."""
        return self.is_admin or (self.namespace == namespace and bool(self.scopes & set(SCOPES)))

    def can_write(self, namespace: str) -> bool:
        """May publish to ``namespace``."""
        return self.is_admin or (self.namespace == namespace and bool(self.scopes & {"write", "admin"}))

    def can_admin(self, namespace: str) -> bool:
        """A namespace admin of ``namespace``: a token of that namespace with the ``admin`` scope, or a global admin."""
        return self.is_admin or (self.namespace == namespace and "admin" in self.scopes)

    def require_admin(self, namespace: str) -> None:
        """401 when anonymous, 403 unless :meth:`can_admin`."""
        if not self.authenticated:
            raise Unauthorized()
        if not self.can_admin(namespace):
            raise Forbidden(f"only an admin of namespace {namespace!r} (a token of it with the 'admin' scope, or a "
                            f"global admin) may do this (token: {self.describe()})")

    def require_write(self, namespace: str) -> None:
        """401 when anonymous, 403 when the token does not cover ``namespace``."""
        if not self.authenticated:
            raise Unauthorized()
        if not self.can_write(namespace):
            raise Forbidden(f"this token cannot write to namespace {namespace!r} (token: {self.describe()})")

    def describe(self) -> str:
        scope = ",".join(sorted(self.scopes))
        return f"{self.name} [{scope}] on {self.namespace or 'all namespaces'}"


ANONYMOUS = Principal()


async def issue_token(
    db: AsyncSession,
    *,
    namespace: str | None,
    scopes: Iterable[str],
    name: str = "",
    expires_in: dt.timedelta | None = None,
) -> tuple[str, ApiToken]:
    """Store a new token; returns its plain text (the only time it is available) and its row. ``expires_in``
    None: it never expires (callers apply the configured default and maximum first, :func:`token_lifetime`)."""
    scopes = sorted(set(scopes))
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise BadRequest(f"scopes must be a non-empty subset of {list(SCOPES)}, got {scopes}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = dt.datetime.now(dt.UTC) + expires_in if expires_in else None
    row = ApiToken(token_sha256=hash_token(token), name=name, namespace=namespace, scopes=scopes, expires_at=expires)
    db.add(row)
    await db.flush()
    return token, row


def token_lifetime(requested_s: int | None, *, default_s: int, max_s: int) -> dt.timedelta | None:
    """How long a new token lives: ``requested_s`` seconds (None: ``default_s``; 0: never), within ``max_s``
    (0: no maximum). None means it never expires; 400 when the request asks for more than the maximum."""
    seconds = default_s if requested_s is None else requested_s
    if max_s and (seconds == 0 or seconds > max_s):
        asked = "never to expire" if seconds == 0 else f"{seconds} s"
        raise BadRequest(f"a token lives at most {max_s} s here (token_max_ttl_s); this one asked for {asked}")
    return dt.timedelta(seconds=seconds) if seconds else None


def token_principal(row: ApiToken | Any | None, *, now: dt.datetime | None = None) -> Principal:
    """The principal of a token row (the ORM's or a Core row of its columns); :class:`Unauthorized` when
    it is missing, revoked or expired."""
    if row is None or row.revoked:
        raise Unauthorized("unknown or revoked token")
    if row.expires_at is not None and row.expires_at <= (now or dt.datetime.now(dt.UTC)):
        raise Unauthorized("this token has expired")
    return Principal(row.id, row.namespace, frozenset(row.scopes), row.name or f"token#{row.id}")


async def principal_by_id(db: AsyncSession, token_id: int | None) -> Principal:
    """The principal of token ``token_id`` as it is now (a web session and a merge job name their token)."""
    row = await db.get(ApiToken, token_id, populate_existing=True) if token_id is not None else None
    return token_principal(row)


def bearer_digest(authorization: str | None) -> str | None:
    """The stored form (sha256) of the bearer token of an ``Authorization`` header value; None when
    absent (anonymous); :class:`Unauthorized` when the header is not ``Bearer <token>``."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return hash_token(token.strip())


def _unexpired(principal: Principal, expires_at: dt.datetime | None) -> Principal:
    if expires_at is not None and expires_at <= dt.datetime.now(dt.UTC):
        raise Unauthorized("this token has expired")
    return principal


#: The columns :func:`token_principal` reads, of the token with the bound sha256 ``digest``.
_TOKEN_ROW = select(ApiToken.id, ApiToken.namespace, ApiToken.scopes, ApiToken.name, ApiToken.revoked,
                    ApiToken.expires_at).where(ApiToken.token_sha256 == bindparam("digest"))


async def read_principal(reader: AsyncEngine, digest: str) -> tuple[Principal, dt.datetime | None]:
    """The principal of token ``digest`` and its expiry, read in one round trip on the reader engine
    (autocommit); :class:`Unauthorized` when it is unknown, revoked or expired."""
    rows = await read_once(reader, _TOKEN_ROW, {"digest": digest})
    row = rows[0] if rows else None
    return token_principal(row), row.expires_at if row is not None else None


async def principal_for(reader: AsyncEngine, digest: str) -> Principal:
    """The principal of token ``digest`` for a request: from the cache (refreshed in the background when
    due), else from one lookup shared by every request that misses at once (:mod:`.token_cache`)."""
    def lookup() -> Any:
        return read_principal(reader, digest)

    cached = TOKENS.get(digest)
    if cached is not None:
        TOKENS.refresh(digest, lookup)
        return _unexpired(*cached)
    return _unexpired(*await TOKENS.load(digest, lookup))


async def resolve(db: AsyncSession, authorization: str | None) -> Principal:
    """The principal for an ``Authorization`` header value (anonymous when absent)."""
    digest = bearer_digest(authorization)
    if digest is None:
        return ANONYMOUS
    engine = db.bind
    assert isinstance(engine, AsyncEngine)  # the service's sessions are bound to its engine
    return await principal_for(engine, digest)
