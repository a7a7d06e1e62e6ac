"""Which URLs a webhook may target (the SSRF rule).

A webhook makes the registry's workers send requests where a namespace admin says, from inside the
operator's network. So by default a target must be ``http(s)`` on a host whose every address is a
*global* one (not loopback, private, link-local — cloud metadata at 169.254.169.254 —, shared,
multicast or reserved). The host is checked when the webhook is created and resolved again before
every delivery, and redirects are not followed. ``ADAPTER_REGISTRY_WEBHOOK_ALLOW_PRIVATE=true``
lifts the address rule (tests, closed networks).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

MAX_URL_CHARS = 2048


class TargetRefused(ValueError):
    """A webhook URL the registry will not send to; the message says why."""


def check_url(url: str) -> tuple[str, int]:
    """``(host, port)`` of a well-formed ``http(s)`` webhook URL; :class:`TargetRefused` otherwise."""
    if len(url) > MAX_URL_CHARS:
        raise TargetRefused(f"the URL is longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused("a webhook URL must be http:// or https:// with a host")
    if parts.username or parts.password:
        raise TargetRefused("a webhook URL cannot carry credentials; use the secret to authenticate deliveries")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def check_target(url: str, *, allow_private: bool) -> None:
    """Refuse ``url`` unless it is well formed and (without ``allow_private``) every address its host
    resolves to is global; :class:`TargetRefused` says which rule it breaks."""
    host, port = check_url(url)
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise TargetRefused(f"cannot resolve {host!r}: {exc}") from exc
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not address.is_global:
            raise TargetRefused(f"{host!r} resolves to {address}, which is not a public address (the operator can "
                                "allow private targets with ADAPTER_REGISTRY_WEBHOOK_ALLOW_PRIVATE=true)")


__all__ = ["MAX_URL_CHARS", "TargetRefused", "check_target", "check_url"]
