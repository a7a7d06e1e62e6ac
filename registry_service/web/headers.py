"""Security headers of every page (error pages too): a Content-Security-Policy that allows only the
registry's own scripts, styles, images and form targets; no framing; no full URLs in Referer."""

from __future__ import annotations

from litestar.datastructures import ResponseHeader

CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "X-Content-Type-Options": "nosniff",
}


def page_response_headers() -> list[ResponseHeader]:
    """:data:`PAGE_HEADERS` for a router's ``response_headers``."""
    return [ResponseHeader(name=k, value=v) for k, v in PAGE_HEADERS.items()]


__all__ = ["CSP", "PAGE_HEADERS", "page_response_headers"]
