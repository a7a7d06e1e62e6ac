"""Who may read a namespace's audit log and manage its webhooks: its admins (a token with the
``admin`` scope on that namespace) and global admins."""

from __future__ import annotations

from ...errors import Forbidden, Unauthorized
from ..auth.tokens import Principal


def is_namespace_admin(principal: Principal, namespace: str) -> bool:
    """Whether ``principal`` administers ``namespace``."""
    return principal.is_admin or (principal.namespace == namespace and "admin" in principal.scopes)


def require_namespace_admin(principal: Principal, namespace: str) -> None:
    """401 when anonymous, 403 unless ``principal`` administers ``namespace``."""
    if not principal.authenticated:
        raise Unauthorized()
    if not is_namespace_admin(principal, namespace):
        raise Forbidden(f"this needs an admin token of namespace {namespace!r} (token: {principal.describe()})")


__all__ = ["is_namespace_admin", "require_namespace_admin"]
