"""``Client``: push, pull, load and browse adapters in a registry."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import httpx
import torch
from torch import nn

from ..config import CONFIG_NAME, AdapterConfig
from ..errors import AdapterError, ValidationFailed
from ..formats import WEIGHTS_NAME
from ..model import AdapterModel
from ..names import COMMIT, VERSION, alias_problem, name_problem, part_problem, ref_problem, shown
from ..problems import Problem
from ..provenance import check_provenance, read_provenance
from ..safetensors_header import file_reader
from ..signature import Signature, signature_from_config, signature_from_model
from ..validation import check_weights, parse_config
from . import trust
from .cache import Cache, CachedVersion, registry_key
from .config import ClientConfig
from .http import Http, RegistryNotFound, StorageIO, json_body
from .lifecycle import LifecycleCalls
from .merges import MergeJob, follow, merge_request
from .transfers import download, upload_parts
from .trust import UnsafeResponse

DIRECT_UPLOAD_LIMIT = 64 << 20
#: ``weights=`` of ``register_base_model``: False, True (the model's own), or safetensors file(s)/folder.
WeightsArg: TypeAlias = bool | str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None


def parse_ref(ref: str, version: int | str | None = None) -> tuple[str, str, str | None]:
    """``"ns/name@ref"`` (or ``"ns/name"`` plus ``version``) -> (ns, name, ref or None), each piece
    checked against the registry's name grammar (:mod:`sdk.names`); raises :class:`AdapterError`."""
    if not isinstance(ref, str):
        raise AdapterError(f"adapter references are strings like 'namespace/name[@version|alias|commit]', "
                           f"got {shown(ref)}")
    name_part, has_at, at = ref.partition("@")
    ns, sep, name = name_part.partition("/")
    if not sep or not ns or not name or "/" in name:
        raise AdapterError(f"adapter references look like 'namespace/name[@version|alias|commit]', got {shown(ref)}")
    if has_at and not at:
        raise AdapterError(f"{shown(ref)} ends with '@': name a version, alias or commit after it")
    if at and version is not None and str(version) != at:
        raise AdapterError(f"{shown(ref)} already names a version; do not also pass version={version!r}")
    chosen = at or (str(version) if version is not None else None)
    _check(part_problem(ns, "namespace") or part_problem(name, "adapter name")
           or (ref_problem(chosen) if chosen is not None else None))
    return ns, name, chosen


@dataclass(frozen=True)
class ResolvedRef:
    """What a reference resolved to: ``name`` (``ns/name``), the ``ref`` asked for, version and commit."""

    name: str
    ref: str
    version: int
    commit: str


class AliasMoved(AdapterError):
    """A reference no longer resolves to the commit it was pinned to."""

    def __init__(self, message: str, *, expected: str, found: str) -> None:
        super().__init__(message)
        self.expected, self.found = expected, found


@dataclass(frozen=True)
class PushResult:
    """What a push created."""

    name: str
    version: int
    commit: str
    url: str
    notes: list[str]


class Client(LifecycleCalls):
    """A registry client. ``url``/``token`` default to the environment or ``adapters login``.

    ``transport`` replaces httpx's own for the requests httpx makes (tests pass one to watch or break them).
    ``storage_io`` says how file bytes move to and from presigned storage URLs: ``"stdlib"`` (the
    default, faster) or ``"httpx"``, which also sends them through ``transport``; see
    :data:`~sdk.client.http.StorageIO`.
    """

    def __init__(self, url: str | None = None, token: str | None = None, *, cache_dir: str | Path | None = None,
                 transport: httpx.BaseTransport | None = None, storage_io: StorageIO = "stdlib",
                 quiet: bool | None = None, timeout: float = 120.0, retries: int = 5) -> None:
        self.config = ClientConfig.resolve(url, token, cache_dir)
        self.http = Http(self.config.url, self.config.token, transport=transport, storage_io=storage_io,
                         timeout=timeout, retries=retries)
        self.cache = Cache(self.config.cache_dir)
        self.registry = registry_key(self.config.url)
        self.quiet = quiet

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- base models ---------------------------------------------------------------------
    def register_base_model(self, model_or_config: nn.Module | dict[str, Any] | str | Path, name: str,
                            revision: str | None = None, *, weights: WeightsArg = False,
                            license: str | None = None) -> dict[str, Any]:
        """Register a base model by its signature (a model) or by its ``config.json`` (dict or path).

        ``weights=True`` (with a model) also uploads its parameters as ``model.safetensors``;
        ``weights=<path or list of paths>`` uploads existing ``*.safetensors`` files (a folder: all of
        them), for server-side merges into the base. Files already stored byte for byte are skipped;
        files above ``DIRECT_UPLOAD_LIMIT`` go through an upload session in parallel parts. ``revision`` is
        the exact revision of the weights, ``license`` their license (both shown with every adapter of it).
        """
        if weights is True and not isinstance(model_or_config, nn.Module):
            raise AdapterError("weights=True needs the model itself; with a config, pass weights=<path(s) of "
                               "*.safetensors files>")
        if weights is True and isinstance(model_or_config, AdapterModel):
            raise AdapterError("pass the base model itself, not an AdapterModel, to upload base weights")
        paths = [] if weights is True or weights is False or weights is None else _weight_paths(weights)
        body: dict[str, Any] = {"name": name, "revision": revision}
        if license is not None:
            body["license"] = license
        sig = signature_from_model(model_or_config) if isinstance(model_or_config, nn.Module) else None
        if sig is not None:
            body["signature"] = sig.to_dict()
        else:
            cfg = model_or_config
            if isinstance(cfg, (str, Path)):
                path = Path(cfg)
                cfg = json.loads((path / "config.json" if path.is_dir() else path).read_text())
            body["config"] = dict(cfg)
        result: dict[str, Any] = self.http.json("POST", "/api/v1/base-models", json=body)
        if weights is True:
            assert isinstance(model_or_config, nn.Module) and sig is not None
            with tempfile.TemporaryDirectory(prefix="base-weights-") as tmp:
                path = Path(tmp) / "model.safetensors"
                save_base_weights(model_or_config, path, sig)
                result["files"] = self._upload_base_weights(result["name"], [path])
        elif paths:
            result["files"] = self._upload_base_weights(result["name"], paths)
        if "files" in result:
            result["has_weights"] = bool(result["files"])
        return result

    def _upload_base_weights(self, name: str, paths: list[Path]) -> list[dict[str, Any]]:
        """Upload weights files of base model ``name`` (skipping identical stored ones); the files now stored."""
        from .transfers import sha256_file

        ns, n = trust.name(name)
        root = f"/api/v1/base-models/{ns}/{n}"
        stored = {f["filename"]: f for f in self.http.json("GET", f"{root}/files")["items"]}
        for path in paths:
            size, sha = path.stat().st_size, sha256_file(path)
            if stored.get(path.name, {}).get("sha256") == sha:
                continue
            if size <= DIRECT_UPLOAD_LIMIT:
                def send(path: Path = path) -> httpx.Response:
                    with open(path, "rb") as fh:
                        return self.http.fetch("POST", f"{root}/files", files=[
                            ("files", (path.name, fh, "application/octet-stream"))])

                json_body(self.http.call(send, idempotent=False))
                continue
            session = trust.upload_session(self.http.json("POST", f"{root}/uploads", json={
                "filename": path.name, "size": size, "sha256": sha}), size)
            try:
                finalize = trust.registry_url(self.http.base_url, session.get("finalize_url"))
                parts = upload_parts(self.http, session, path, quiet=self.quiet)
            except BaseException:
                self.http.fetch("DELETE", f"{root}/uploads/{session['id']}")
                raise
            self.http.json("POST", finalize, json={"parts": parts}, idempotent=False)
        return self.http.json("GET", f"{root}/files")["items"]

    def base_model(self, name: str) -> dict[str, Any]:
        """A base model with its signature."""
        _check(name_problem(name, "base model name"))
        return self.http.json("GET", f"/api/v1/base-models/{name}")

    def base_models(self, q: str | None = None) -> list[dict[str, Any]]:
        """Registered base models."""
        return self.http.json("GET", "/api/v1/base-models", params={"q": q} if q else None)["items"]

    # --- browsing ------------------------------------------------------------------------
    def info(self, name: str) -> dict[str, Any]:
        """An adapter with its aliases."""
        ns, n, _ = parse_ref(name)
        return self.http.json("GET", f"/api/v1/adapters/{ns}/{n}")

    def versions(self, name: str) -> list[dict[str, Any]]:
        """Every version of an adapter, newest first."""
        ns, n, _ = parse_ref(name)
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 1000}
        while True:  # the service answers 1000 at most per request, with a cursor to the rest
            body = self.http.json("GET", f"/api/v1/adapters/{ns}/{n}/versions", params=params)
            items += body["items"]
            if not body.get("has_more") or not body.get("next_before"):
                return items
            params["before"] = body["next_before"]

    def ls(self, *, base_model: str | None = None, method: str | None = None, tag: str | None = None,
           q: str | None = None, page: int = 1, serves: str | None = None,
           max_lora_rank: int | None = None) -> dict[str, Any]:
        """Search adapters (``serves``/``max_lora_rank``: by the serving report of their latest version), with
        the number of matches (``total``, counted up to 1,000: ``total_exact``)."""
        params = {k: v for k, v in {"base_model": base_model, "method": method, "tag": tag, "q": q,
                                     "page": page, "serves": serves, "max_lora_rank": max_lora_rank,
                                     "count": "true"}.items()
                  if v is not None}
        return self.http.json("GET", "/api/v1/adapters", params=params)

    def set_alias(self, name: str, alias: str, version: int | str) -> dict[str, Any]:
        """Point ``alias`` at ``version``."""
        ns, n, _ = parse_ref(name)
        _check(alias_problem(alias))
        return self.http.json("PUT", f"/api/v1/adapters/{ns}/{n}/aliases/{alias}", json={"version": version})

    def alias_history(self, name: str, alias: str, *, limit: int = 100) -> dict[str, Any]:
        """Every move of ``alias`` (newest first, at most ``limit``): ``{alias, current, items}``."""
        ns, n, _ = parse_ref(name)
        _check(alias_problem(alias))
        return self.http.json("GET", f"/api/v1/adapters/{ns}/{n}/aliases/{alias}/history", params={"limit": limit})

    def delete_alias(self, name: str, alias: str) -> dict[str, Any]:
        """Remove ``alias``."""
        ns, n, _ = parse_ref(name)
        _check(alias_problem(alias))
        return self.http.json("DELETE", f"/api/v1/adapters/{ns}/{n}/aliases/{alias}")

    # --- checking and pushing -------------------------------------------------------------
    def _signature(self, base_model: str) -> Signature:
        return Signature.from_dict(self.base_model(base_model)["signature"])

    def check(self, folder: str | Path, base_model: str | Signature | nn.Module | dict[str, Any],
              *, untrained: bool = False) -> list[Problem]:
        """Problems of the adapter in ``folder`` against a base model (registry name, signature,
        model or config dict); an empty list means the registry would accept it."""
        folder = Path(folder)
        if isinstance(base_model, Signature):
            sig = base_model
        elif isinstance(base_model, nn.Module):
            sig = signature_from_model(base_model)
        elif isinstance(base_model, dict):
            sig = signature_from_config(base_model)
        else:
            sig = self._signature(base_model)
        return check_folder(folder, sig, untrained=untrained)

    def push(self, model_or_dir: AdapterModel | Any | str | Path, name: str, base_model: str | None = None, *,
             alias: str | None = None, description: str | None = None, tags: list[str] | None = None,
             private: bool | None = None, adapter_name: str = "default", untrained: bool = False,
             metrics: Mapping[str, float] | None = None, params: Mapping[str, Any] | None = None,
             dataset: str | Mapping[str, str] | None = None) -> PushResult:
        """Check locally against the base model's signature, then upload a new version. ``private``: a new
        adapter's visibility (None: public); for an existing adapter it must match (else 409) or be None.

        ``model_or_dir``: an ``AdapterModel``, a ``peft.PeftModel`` or a folder in PEFT's format.
        ``metrics``, ``params`` and ``dataset`` (a name, or ``{"name", "sha256"}``) are the version's
        provenance; what training recorded (``model.provenance``, a folder's ``provenance.json``) is sent
        too, the arguments winning key by key. ``description`` describes this version (and a new adapter)."""
        ns, n, at = parse_ref(name)
        if at:
            raise AdapterError("push to 'namespace/name'; the registry picks the version number")
        given = {"metrics": metrics, "params": params,
                 "dataset": {"name": dataset} if isinstance(dataset, str) else dataset}
        check_provenance({k: v for k, v in given.items() if v is not None})
        with tempfile.TemporaryDirectory(prefix="adapter-push-") as tmp:
            folder = self._folder_for(model_or_dir, adapter_name, Path(tmp))
            record = read_provenance(folder)
            for key, value in given.items():
                if value:
                    record[key] = {**record.get(key, {}), **value} if key != "dataset" else dict(value)
            record = check_provenance(record)
            config_raw = (folder / CONFIG_NAME).read_bytes()
            config, _, _ = parse_config(config_raw)
            target = base_model or self._existing_base(ns, n) or _base_from_config(config)
            if not target:
                raise AdapterError("say which registered base model (namespace/name) this adapter is for")
            problems = check_folder(folder, self._signature(target), untrained=untrained)
            if problems:
                raise ValidationFailed(problems)
            form = {"base_model": target, "untrained": str(untrained).lower()}
            if private is not None:
                form["private"] = str(private).lower()
            if alias:
                form["alias"] = alias
            if description is not None:
                form["description"] = description
            if tags:
                form["tags"] = ",".join(tags)
            form.update({key: json.dumps(value) for key, value in record.items()})
            weights = folder / WEIGHTS_NAME
            readme = folder / "README.md"
            if weights.stat().st_size <= DIRECT_UPLOAD_LIMIT:
                body = self._push_direct(ns, n, config_raw, weights, readme, form)
            else:
                body = self._push_session(ns, n, config_raw, weights, readme, form)
        if not isinstance(body, dict):
            raise UnsafeResponse(f"the registry answered a push with {type(body).__name__}, not an object")
        notes = body.get("notes") or []
        return PushResult(f"{ns}/{n}", trust.version_number(body.get("version")), trust.commit(body.get("commit")),
                          str(body.get("url") or ""), [str(x) for x in notes] if isinstance(notes, list) else [])

    def _folder_for(self, model_or_dir: AdapterModel | Any | str | Path, adapter_name: str, tmp: Path) -> Path:
        """A folder in PEFT's format holding what ``model_or_dir`` is (written to ``tmp`` for a model)."""
        if isinstance(model_or_dir, AdapterModel):
            if adapter_name not in model_or_dir.peft_config:
                raise AdapterError(f"the model has no adapter {adapter_name!r}: {model_or_dir.adapter_names}")
            model_or_dir.save_pretrained(tmp, selected_adapters=[adapter_name])
            return tmp if adapter_name == "default" else tmp / adapter_name
        if _is_peft_model(model_or_dir):
            configs = getattr(model_or_dir, "peft_config", {})
            if adapter_name not in configs:
                raise AdapterError(f"the PeftModel has no adapter {adapter_name!r}: {sorted(configs)}")
            model_or_dir.save_pretrained(str(tmp), selected_adapters=[adapter_name], safe_serialization=True)
            return tmp if adapter_name == "default" else tmp / adapter_name
        if not isinstance(model_or_dir, (str, os.PathLike)):
            raise AdapterError("push takes an sdk AdapterModel, a peft.PeftModel or a folder in PEFT's format "
                               "(adapter_config.json + adapter_model.safetensors), "
                               f"not a {type(model_or_dir).__name__}")
        folder = Path(model_or_dir)
        if not folder.is_dir():
            raise AdapterError(f"{folder} is not a folder; pass a folder written by save_pretrained")
        if not (folder / CONFIG_NAME).is_file():
            raise AdapterError(f"{folder} has no {CONFIG_NAME}; pass a folder written by save_pretrained")
        if not (folder / WEIGHTS_NAME).is_file():
            from ..formats import read_adapter_weights

            read_adapter_weights(folder)  # raises the pickle/missing-file error with its advice
        return folder

    def _existing_base(self, ns: str, name: str) -> str | None:
        try:
            return self.http.json("GET", f"/api/v1/adapters/{ns}/{name}")["base_model"]
        except AdapterError:
            return None

    def _push_direct(self, ns: str, name: str, config_raw: bytes, weights: Path, readme: Path,
                     form: dict[str, str]) -> dict[str, Any]:
        def send() -> httpx.Response:
            handles = {CONFIG_NAME: (CONFIG_NAME, config_raw, "application/json"),
                       WEIGHTS_NAME: (WEIGHTS_NAME, open(weights, "rb"), "application/octet-stream")}
            if readme.is_file():
                handles["README.md"] = ("README.md", readme.read_bytes(), "text/markdown")
            try:
                return self.http.fetch("POST", f"/api/v1/adapters/{ns}/{name}/versions", files=handles, data=form)
            finally:
                handles[WEIGHTS_NAME][1].close()

        return json_body(self.http.call(send, idempotent=False))

    def _push_session(self, ns: str, name: str, config_raw: bytes, weights: Path, readme: Path,
                      form: dict[str, str]) -> dict[str, Any]:
        """A large file: parts straight to storage, hashed meanwhile; finalize declares the sha256,
        which the registry checks against the stored bytes before it publishes."""
        from .transfers import sha256_file

        size = weights.stat().st_size
        session = trust.upload_session(
            self.http.json("POST", f"/api/v1/adapters/{ns}/{name}/uploads", json={"size": size}), size)
        try:
            finalize = trust.registry_url(self.http.base_url, session.get("finalize_url"))
            with ThreadPoolExecutor(max_workers=1) as hasher:
                digest = hasher.submit(sha256_file, weights)
                parts = upload_parts(self.http, session, weights, quiet=self.quiet)
                sha = digest.result()
        except BaseException:
            self.http.fetch("DELETE", f"/api/v1/adapters/{ns}/{name}/uploads/{session['id']}")
            raise
        files: dict[str, Any] = {CONFIG_NAME: (CONFIG_NAME, config_raw, "application/json")}
        if readme.is_file():
            files["README.md"] = ("README.md", readme.read_bytes(), "text/markdown")
        return self.http.json("POST", finalize, files=files, idempotent=False,
                              data=form | {"parts": json.dumps(parts), "sha256": sha})

    # --- server-side merges ----------------------------------------------------------------
    def merge(self, inputs: Sequence[str | tuple[str, float]], output: str, *, weights: Sequence[float] | None = None,
              combination_type: str = "linear", into: str = "adapter", wait: bool = True,
              timeout: float | None = None, poll: float = 0.5, **parameters: Any) -> MergeJob:
        """Ask the registry to merge adapter versions (``"ns/name@ref"``, optionally ``(ref, weight)``).

        ``into="adapter"``: a new version of adapter ``output`` combining the inputs
        (``combination_type`` as in ``add_weighted_adapter``: linear, cat, svd, ties, dare_linear, dare_ties,
        magnitude_prune and their ``_svd`` forms; ``density``, ``majority_sign_method``, ``svd_rank``,
        ``svd_clamp``, ``seed``, ``alias``, ``description``, ``private`` go in ``parameters``).
        ``into="model"``: the inputs merged into the base model's registered weights, stored as base model
        ``output``. The job runs on the registry's workers; with ``wait`` this follows it to the end
        (raising :class:`MergeJobFailed` unless it succeeds), else it returns the queued job.
        """
        body = merge_request(inputs, output=output, weights=weights, combination_type=combination_type, into=into,
                             **parameters)
        job = MergeJob.from_json(self.http.json("POST", "/api/v1/merge-jobs", json=body, idempotent=False))
        return follow(self.http, job, timeout=timeout, poll=poll, quiet=self.quiet) if wait else job

    def merge_job(self, job_id: str) -> MergeJob:
        """The current state of a merge job."""
        return MergeJob.from_json(self.http.json("GET", f"/api/v1/merge-jobs/{job_id}"))

    def cancel_merge(self, job_id: str) -> MergeJob:
        """Cancel a queued or running merge job (a running one stops at its next step)."""
        return MergeJob.from_json(self.http.json("POST", f"/api/v1/merge-jobs/{job_id}/cancel", idempotent=False))

    # --- compositions ------------------------------------------------------------------------
    def create_composition(self, name: str, members: Sequence[str | tuple[str, float] | dict[str, Any]],
                           routing: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Publish a composition version; see :func:`sdk.client.compositions.create_composition`."""
        from .compositions import create_composition

        return create_composition(self, name, members, routing, **kwargs)

    def poly_over_members(self, model: nn.Module, members: Sequence[str], n_tasks: int, n_splits: int = 1
                          ) -> AdapterModel:
        """``model`` with a trainable Poly router over LoRA adapters; see
        :func:`sdk.client.compositions.poly_over_members`."""
        from .compositions import poly_over_members

        return poly_over_members(self, model, members, n_tasks, n_splits)

    def composition(self, ref: str) -> dict[str, Any]:
        """A composition version (``ns/name[@version|alias|commit]``) with its pinned members."""
        from .compositions import composition_version

        return composition_version(self, ref)

    # --- pulling and loading --------------------------------------------------------------
    def resolve(self, ref: str, version: int | str | None = None) -> ResolvedRef:
        """What ``ref`` (``ns/name[@version|alias|commit]``) points at now: its version number and commit.
        Pin the commit to have every replica load the same bytes (``pull(..., expect_commit=)``)."""
        ns, name, at = parse_ref(ref, version)
        v = CachedVersion.from_json(self.http.json("GET", f"/api/v1/adapters/{ns}/{name}/versions/{at or 'latest'}"))
        return ResolvedRef(f"{ns}/{name}", at or "latest", v.version, v.commit)

    def pull(self, ref: str, version: int | str | None = None, *, expect_commit: str | None = None) -> Path:
        """A local folder with the adapter's files, named by the commit it resolved to
        (``…/<ns>/<name>/<commit>/``). A version pinned by number or commit that is already cached costs no
        request; an alias costs one small request, so a moved alias gives the new version's bytes.
        ``expect_commit``: refuse (:class:`AliasMoved`) when ``ref`` no longer resolves to that commit,
        e.g. an alias moved since the fleet pinned it."""
        ns, name, at = parse_ref(ref, version)
        if expect_commit is not None:
            _check(None if COMMIT.match(str(expect_commit)) else
                   f"expect_commit must be a 40-hex commit, got {str(expect_commit)[:60]!r}")
        if at is not None and (VERSION.match(at) or COMMIT.match(at)) and expect_commit in (None, at):
            cached = self.cache.lookup(self.registry, ns, name, at)
            if cached is not None:
                snap = self.cache.snapshot_dir(self.registry, ns, name, cached.commit)
                if self.cache.complete(snap, cached.files):
                    return snap
        # every value of the answer is checked before it becomes part of a path (see trust.py)
        v = CachedVersion.from_json(self.http.json("GET", f"/api/v1/adapters/{ns}/{name}/versions/{at or 'latest'}"))
        if at is not None and ((VERSION.match(at) and v.version != int(at)) or (COMMIT.match(at) and v.commit != at)):
            raise UnsafeResponse(f"asked for {ns}/{name}@{at}, the registry answered with version {v.version} "
                                 f"(commit {v.commit})")
        if expect_commit is not None and v.commit != expect_commit:
            raise AliasMoved(f"{ns}/{name}@{at or 'latest'} now resolves to version {v.version} (commit {v.commit}), "
                             f"not the expected commit {expect_commit}; it moved since it was pinned",
                             expected=expect_commit, found=v.commit)
        free = shutil.disk_usage(self.cache.root).free
        needed = sum(f["size"] for f in v.files if not self.cache.has_blob(f["sha256"], f["size"]))
        if needed > free:
            raise AdapterError(f"{ns}/{name}@{v.version} needs {needed} bytes in the cache at {self.cache.root}, "
                               f"but only {free} are free")
        snap = self.cache.snapshot_dir(self.registry, ns, name, v.commit)
        if not self.cache.complete(snap, v.files):
            for f in v.files:
                path = f"/api/v1/adapters/{ns}/{name}/versions/{v.version}/files/{f['filename']}"
                self.cache.ensure_blob(
                    f["sha256"], f["size"],
                    lambda dest, path=path, f=f: download(self.http, path, dest, size=f["size"], sha256=f["sha256"],
                                                          label=f"{ns}/{name}@{v.version} {f['filename']}",
                                                          quiet=self.quiet),
                )
            snap = self.cache.make_snapshot(self.registry, ns, name, v)
        self.cache.record(self.registry, ns, name, v)
        return snap

    def load(self, model: nn.Module, ref: str, adapter_name: str = "default", *, version: int | str | None = None,
             is_trainable: bool = False, activate: bool = True, expect_commit: str | None = None) -> AdapterModel:
        """Pull ``ref`` and inject it into ``model`` (a plain model, or an ``AdapterModel`` to add to);
        ``expect_commit`` as in :meth:`pull`.

        A ``ref`` that names a composition rather than an adapter loads the composition into a plain
        model: its members routed with Arrow, or stacked (see :mod:`sdk.client.compositions`)."""
        try:
            folder = self.pull(ref, version, expect_commit=expect_commit)
        except RegistryNotFound:
            if isinstance(model, AdapterModel) or version is not None:
                raise
            from .compositions import load_composition

            try:
                return load_composition(self, model, ref)
            except RegistryNotFound:
                pass
            raise
        if isinstance(model, AdapterModel):
            model.load_adapter(folder, adapter_name, is_trainable=is_trainable)
            if activate:
                model.set_adapter(adapter_name)
            return model
        return AdapterModel.from_pretrained(model, folder, adapter_name=adapter_name, is_trainable=is_trainable)


def _is_peft_model(obj: object) -> bool:
    """``obj`` is a ``peft.PeftModel`` (only when peft is imported: otherwise it cannot be one)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(obj, getattr(peft, "PeftModel", ()))


def _check(problem: str | None) -> None:
    """Raise ``problem`` (a name that breaks the registry's grammar) as an :class:`AdapterError`."""
    if problem:
        raise AdapterError(problem)


def _weight_paths(weights: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The ``*.safetensors`` files named by ``weights`` (a file, a folder of them, or a list)."""
    items = [weights] if isinstance(weights, (str, os.PathLike)) else list(weights)
    paths: list[Path] = []
    for item in items:
        p = Path(item)
        found = sorted(p.glob("*.safetensors")) if p.is_dir() else [p]
        if p.is_dir() and not found:
            raise AdapterError(f"{p} holds no *.safetensors files")
        paths += found
    for p in paths:
        if not p.is_file():
            raise AdapterError(f"no weights file {p}")
        if p.suffix != ".safetensors":
            raise AdapterError(f"{p} is not a safetensors file; convert it with safetensors.torch.save_model(model, "
                               "'model.safetensors') (the registry never loads pickles)")
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise AdapterError(f"weights files need distinct names, got {names}")
    return paths


def save_base_weights(model: nn.Module, path: Path, signature: Signature) -> Path:
    """Write the model's parameters (the tensors its signature lists) to a safetensors file.

    Tied parameters (GPT-2's ``lm_head.weight`` is ``transformer.wte.weight``) are written once,
    under the name that comes first in the state dict, as ``save_pretrained`` does; buffers are left out.
    """
    from safetensors.torch import save_file

    wanted = {f"{m.path}.{p}" if m.path else p for m in signature.modules for p in m.params}
    tensors: dict[str, torch.Tensor] = {}
    seen: set[tuple[Any, ...]] = set()
    for key, t in model.state_dict().items():
        view = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if key not in wanted or view in seen:
            continue
        seen.add(view)
        tensors[key] = t.detach()
    storages = Counter(t.untyped_storage().data_ptr() for t in tensors.values())
    tensors = {k: t.clone() if storages[t.untyped_storage().data_ptr()] > 1 else t for k, t in tensors.items()}
    save_file({k: t.contiguous() for k, t in tensors.items()}, str(path), metadata={"format": "pt"})
    return path


def _base_from_config(config: AdapterConfig) -> str | None:
    name = config.base_model_name_or_path
    return name if name and name.count("/") == 1 else None


def check_folder(folder: Path, signature: Signature, *, untrained: bool = False) -> list[Problem]:
    """The registry's checks on a saved adapter folder, run locally."""
    try:
        config, _, _ = parse_config((folder / CONFIG_NAME).read_bytes())
        weights = folder / WEIGHTS_NAME
        with open(weights, "rb") as f:
            check_weights(file_reader(f), weights.stat().st_size, config, signature, allow_untrained=untrained)
    except ValidationFailed as exc:
        return exc.problems
    except FileNotFoundError as exc:
        return [Problem(None, None, None, f"missing file: {exc.filename}")]
    return []
