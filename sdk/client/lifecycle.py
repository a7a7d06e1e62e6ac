"""The client's calls for taking things back and watching what happens: yanking and purging
versions, deleting adapters and base models, reading a namespace's audit log and managing its
webhooks. :class:`~sdk.client.api.Client` inherits them (:class:`LifecycleCalls`)."""

from __future__ import annotations

from typing import Any

from ..errors import AdapterError
from ..names import COMMIT, VERSION, name_problem, part_problem, shown
from .http import Http

#: Events :meth:`LifecycleCalls.events` returns at most.
MAX_EVENTS = 10_000


def _name(name: str, what: str = "adapter name") -> tuple[str, str]:
    """``ns/name`` checked against the registry's name grammar, split."""
    if problem := name_problem(name, what):
        raise AdapterError(problem)
    ns, _, rest = name.partition("/")
    return ns, rest


def _namespace(namespace: str) -> str:
    if problem := part_problem(namespace, "namespace"):
        raise AdapterError(problem)
    return namespace


class LifecycleCalls:
    """Yank, purge, delete; the audit log; webhooks (each needs the token the registry asks for)."""

    http: Http

    def yank(self, name: str, version: int | str, reason: str = "", *, purge: bool = False) -> dict[str, Any]:
        """Yank version ``version`` (a number or a commit) of ``name``: from now on it answers 410 Gone
        with ``reason`` and is no longer ``latest``. The registry refuses while an alias points at it
        (it names the alias: move or remove it first). ``purge=True`` (namespace admins) also removes
        its files. Yanking again is harmless."""
        ns, n = _name(name)
        ref = str(version)
        if not (VERSION.match(ref) or COMMIT.match(ref)):
            raise AdapterError(f"name the version to yank by number or 40-hex commit, got {shown(version)}")
        return self.http.json("DELETE", f"/api/v1/adapters/{ns}/{n}/versions/{ref}",
                              params={"reason": reason, "purge": "true" if purge else "false"})

    def delete_version(self, name: str, version: int | str, reason: str = "", *,
                       purge: bool = False) -> dict[str, Any]:
        """The same as :meth:`yank` (MLflow's name for it); versions are never renumbered."""
        return self.yank(name, version, reason, purge=purge)

    def delete_adapter(self, name: str) -> dict[str, Any]:
        """Delete adapter ``name`` with every version (a namespace admin token); irreversible."""
        ns, n = _name(name)
        return self.http.json("DELETE", f"/api/v1/adapters/{ns}/{n}")

    def delete_base_model(self, name: str) -> dict[str, Any]:
        """Delete base model ``name`` and its weights; refused while adapters or merged models use it."""
        ns, n = _name(name, "base model name")
        return self.http.json("DELETE", f"/api/v1/base-models/{ns}/{n}")

    def events(self, namespace: str, adapter: str | None = None, *, limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` audit events of ``namespace`` (of one adapter of it), newest first."""
        params: dict[str, Any] = {"namespace": _namespace(namespace)}
        if adapter is not None:
            params["adapter"] = adapter
        limit = max(1, min(limit, MAX_EVENTS))
        out: list[dict[str, Any]] = []
        while len(out) < limit:
            page = self.http.json("GET", "/api/v1/events", params=params | {"limit": min(200, limit - len(out))})
            out += page["items"]
            if not page.get("next_cursor"):
                break
            params["cursor"] = page["next_cursor"]
        return out[:limit]

    def create_webhook(self, namespace: str, url: str, events: list[str] | None = None,
                       secret: str | None = None) -> dict[str, Any]:
        """Add a webhook to ``namespace`` for ``events`` (all when omitted); the answer holds the secret
        deliveries are signed with (``X-Adapter-Hub-Signature-256``), shown only this once."""
        body: dict[str, Any] = {"url": url, "events": events or ["*"]}
        if secret is not None:
            body["secret"] = secret
        return self.http.json("POST", f"/api/v1/namespaces/{_namespace(namespace)}/webhooks", json=body)

    def webhooks(self, namespace: str) -> list[dict[str, Any]]:
        """The webhooks of ``namespace``."""
        return self.http.json("GET", f"/api/v1/namespaces/{_namespace(namespace)}/webhooks")["items"]

    def delete_webhook(self, namespace: str, webhook_id: int) -> dict[str, Any]:
        """Remove a webhook (and its delivery log)."""
        return self.http.json("DELETE", f"/api/v1/namespaces/{_namespace(namespace)}/webhooks/{int(webhook_id)}")

    def webhook_deliveries(self, namespace: str, webhook_id: int) -> list[dict[str, Any]]:
        """The newest deliveries of a webhook: state, attempts, the target's last answer."""
        path = f"/api/v1/namespaces/{_namespace(namespace)}/webhooks/{int(webhook_id)}/deliveries"
        return self.http.json("GET", path)["items"]


__all__ = ["LifecycleCalls"]
