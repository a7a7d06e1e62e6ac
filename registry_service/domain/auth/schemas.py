"""The JSON bodies the tokens API answers with, as the OpenAPI schema states them."""

from __future__ import annotations

from typing import TypedDict


class TokenCreated(TypedDict):
    """A new token: its text is shown this once."""

    token: str
    namespace: str | None
    scopes: list[str]
    name: str


class WhoAmI(TypedDict):
    """The calling token's namespace and scopes."""

    authenticated: bool
    name: str
    namespace: str | None
    scopes: list[str]
    admin: bool


__all__ = ["TokenCreated", "WhoAmI"]
