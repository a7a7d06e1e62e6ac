"""Signing webhook bodies: HMAC-SHA256 of the exact bytes sent, keyed by the webhook's secret, in
the ``X-Adapter-Hub-Signature-256: sha256=<hex>`` header (GitHub's scheme, so its receivers' code
fits). Receivers recompute it over the raw body and compare in constant time."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Adapter-Hub-Signature-256"
EVENT_HEADER = "X-Adapter-Hub-Event"
DELIVERY_HEADER = "X-Adapter-Hub-Delivery"


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for ``body``: ``sha256=<hex>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is the signature of ``body`` under ``secret`` (constant-time comparison)."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


__all__ = ["DELIVERY_HEADER", "EVENT_HEADER", "SIGNATURE_HEADER", "sign", "verify"]
