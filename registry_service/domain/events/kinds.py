"""The kinds of audit events (the ``kind`` of an event and what webhooks subscribe to)."""

from __future__ import annotations

#: Every kind, with what it records. Webhooks may subscribe to any of these, or to ``*``.
KINDS: dict[str, str] = {
    "push": "a version was published (push, upload session, Hub commit)",
    "adapter.edited": "description or tags changed",
    "visibility.changed": "an adapter became public or private",
    "alias.set": "an alias was created",
    "alias.moved": "an alias now points at another version",
    "alias.removed": "an alias was removed",
    "version.yanked": "a version was yanked (410 Gone, out of latest)",
    "version.purged": "a yanked version's files were removed",
    "adapter.deleted": "an adapter and all its versions were deleted",
    "base-model.registered": "a base model was registered",
    "base-model.weights": "weights files were added to a base model",
    "base-model.deleted": "a base model was deleted",
    "token.created": "an API token was created",
    "token.revoked": "an API token was revoked",
    "merge.submitted": "a merge job was submitted",
    "merge.cancelled": "a merge job was cancelled",
    "merge.requeued": "a merge job's attempt failed or its worker died; it runs again",
    "merge.published": "a merge job published its output",
    "merge.failed": "a merge job failed",
    "webhook.created": "a webhook was added",
    "webhook.deleted": "a webhook was removed",
}

__all__ = ["KINDS"]
