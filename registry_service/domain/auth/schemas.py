"""The JSON bodies the tokens API answers with, as the OpenAPI schema states them."""

from __future__ import annotations

from typing import TypedDict


class TokenCreated(TypedDict):
    """A new token: its text is shown this once."""

    token: str
    id: int
    namespace: str | None
    scopes: list[str]
    name: str
    expires_at: str | None


class TokenInfo(TypedDict):
    """A token as listed (never its text)."""

    id: int
    name: str
    namespace: str | None
    scopes: list[str]
    created_at: str | None
    expires_at: str | None
    revoked: bool
    #: neither revoked nor expired
    active: bool
    #: the token making this request
    current: bool


class TokenPage(TypedDict):
    """A page of tokens, newest first."""

    items: list[TokenInfo]
    total: int
    page: int


class TokenRevoked(TypedDict):
    """A revoked token."""

    id: int
    revoked: bool


class WhoAmI(TypedDict):
    """The calling token's namespace, scopes and expiry."""

    authenticated: bool
    id: int | None
    name: str
    namespace: str | None
    scopes: list[str]
    admin: bool
    expires_at: str | None


__all__ = ["TokenCreated", "TokenInfo", "TokenPage", "TokenRevoked", "WhoAmI"]
