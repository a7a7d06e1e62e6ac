"""Bearer tokens: creation (shown once), storage as sha256 only, and the caller's permissions."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ...db.models import ApiToken
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


async def create_token(
    db: AsyncSession,
    *,
    namespace: str | None,
    scopes: Iterable[str],
    name: str = "",
    expires_in: dt.timedelta | None = None,
) -> str:
    """Store a new token and return its plain text (the only time it is available)."""
    scopes = sorted(set(scopes))
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise BadRequest(f"scopes must be a non-empty subset of {list(SCOPES)}, got {scopes}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = dt.datetime.now(dt.UTC) + expires_in if expires_in else None
    db.add(ApiToken(token_sha256=hash_token(token), name=name, namespace=namespace, scopes=scopes, expires_at=expires))
    await db.flush()
    return token


async def resolve(db: AsyncSession, authorization: str | None) -> Principal:
    """The principal for an ``Authorization`` header value (anonymous when absent)."""
    if not authorization:
        return ANONYMOUS
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    digest = hash_token(token.strip())
    # A lookup is reused for a few seconds (see token_cache: the bound on how late another process
    # sees a revocation); the expiry is checked on every request either way.
    cached = TOKENS.get(digest)
    if cached is None:
        generation = TOKENS.generation
        t = ApiToken.__table__.c
        row = (await (await db.connection()).execute(
            select(t.id, t.namespace, t.scopes, t.name, t.revoked, t.expires_at).where(t.token_sha256 == digest)
        )).first()
        if row is None or row.revoked:
            raise Unauthorized("unknown or revoked token")
        cached = Principal(row.id, row.namespace, frozenset(row.scopes), row.name or f"token#{row.id}"), row.expires_at
        TOKENS.put(digest, cached[0], cached[1], generation)
    principal, expires_at = cached
    if expires_at is not None and expires_at <= dt.datetime.now(dt.UTC):
        raise Unauthorized("this token has expired")
    return principal
