"""Schemathesis hooks for the schema fuzzing test (loaded through ``SCHEMATHESIS_HOOKS``): the Hub
commit body is ndjson, which schemathesis sends as the text it generates."""

from __future__ import annotations

import schemathesis

schemathesis.serializer.alias("application/x-ndjson", "text/plain")
