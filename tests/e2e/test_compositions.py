"""Compositions in the registry, end to end: publish (members pinned, Arrow prototypes computed once by the
server), load with ``Client.load``/``sdk.load`` (equal to PEFT's Arrow and stacking), privacy, search, errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import peft
import pytest
import torch
from e2e_server import Server
from safetensors.torch import load as load_safetensors
from test_client import logits, register_tiny, saved_adapter, tiny_gpt2, tiny_llama, token_ids, uniq
from typer.testing import CliRunner

from sdk.cli import app
from sdk.client import Client, RegistryError, RegistryNotFound
from sdk.errors import ValidationFailed
from sdk.tuners.lora import arrow as arrow_mod


def _push_library(c: Client, ns: str, base: str, tmp: Path, n: int, seed: int, stem: str = "expert"
                  ) -> list[tuple[str, Path]]:
    out = []
    for i in range(n):
        folder = saved_adapter(tmp / f"{stem}{i}", seed=seed + i)
        c.push(folder, f"{ns}/{stem}{i}", base_model=base)
        out.append((f"{ns}/{stem}{i}", folder))
    return out


def test_arrow_composition_publishes_prototypes_and_loads_like_peft(server: Server, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ns = uniq("comp")
    base = register_tiny(server, tmp_path, "llama")
    with Client(server.url, server.token(ns, "write"), cache_dir=tmp_path / "w", quiet=True) as c:
        experts = _push_library(c, ns, base, tmp_path, 4, 30)
        general = _push_library(c, ns, base, tmp_path, 2, 60, stem="general")
        routing = {"kind": "arrow", "top_k": 2, "router_temperature": 0.8, "use_gks": True, "rng_seed": 4}
        members = [e for e, _ in experts] + [{"adapter": g, "role": "general"} for g, _ in general]
        made = c.create_composition(f"{ns}/router", members, routing, alias="prod", description="four experts")
        assert made["version"] == 1 and [m["version"] for m in made["members"]] == [1] * 6
        assert all(len(m["commit"]) == 40 for m in made["members"])
        (proto_file,) = made["files"]
        answer = httpx.get(proto_file["url"])
        assert answer.status_code == 200, answer.text[:300]
        raw = answer.content
        assert hashlib.sha256(raw).hexdigest() == proto_file["sha256"] and len(raw) == proto_file["size"]
        stored = load_safetensors(raw)
        assert len(stored) == 6 and stored["model.layers.0.mlp.down_proj"].shape == (4, 64)  # 2 layers × q, v, down
        assert stored["model.layers.1.self_attn.q_proj"].shape == (4, 32)

        monkeypatch.setattr(arrow_mod, "expert_prototype", lambda *a: pytest.fail("the client recomputed an SVD"))
        routed = c.load(tiny_llama(), f"{ns}/router@prod")
        got = logits(routed)
        monkeypatch.undo()
    cfg = {k: routing[k] for k in ("top_k", "router_temperature", "use_gks", "rng_seed")}
    theirs = peft.create_arrow_model(tiny_llama(), [str(f) for _, f in experts], peft.ArrowConfig(**cfg),
                                     [str(f) for _, f in general]).eval()
    torch.testing.assert_close(got, logits(theirs), atol=1e-5, rtol=1e-5)
    assert (got - logits(tiny_llama())).abs().max() > 1e-3


def test_stacked_composition_with_weights_equals_peft_cat(server: Server, tmp_path: Path) -> None:
    ns = uniq("stack")
    base = register_tiny(server, tmp_path, "llama")
    with Client(server.url, server.token(ns, "write"), cache_dir=tmp_path / "w", quiet=True) as c:
        experts = _push_library(c, ns, base, tmp_path, 2, 80)
        c.create_composition(f"{ns}/mix", [(experts[0][0], 0.5), (experts[1][0], -1.25)], {"kind": "stacked"})
        info = c.composition(f"{ns}/mix")
        assert info["routing"] == {"kind": "stacked"} and info["files"] == []
        found = c.http.json("GET", "/api/v1/compositions", params={"q": "mix", "base_model": base})
        assert [i["name"] for i in found["items"]] == [f"{ns}/mix"]
        got = logits(c.load(tiny_llama(), f"{ns}/mix"))
        page = httpx.get(f"{server.url}/compositions/{ns}/mix")
        assert page.status_code == 200 and "stacked" in page.text
        for adapter, _ in experts:  # members linked, and one lineage edge from each
            assert f'href="/adapters/{adapter}/versions/1"' in page.text
            assert f"{adapter}@1</a> → {ns}/mix@1" in page.text
        opts = ["--url", server.url, "--token", server.token(ns, "write"), "--cache-dir", str(tmp_path / "cli")]
        made = CliRunner().invoke(app, [*opts, "compositions", "create", f"{ns}/cli-router", f"{experts[0][0]}@1",
                                        experts[1][0], "--routing", "arrow", "--top-k", "1", "--alias", "prod"])
        assert made.exit_code == 0, made.output
        assert f"{ns}/cli-router@1" in made.output and "arrow, 2 members" in made.output
        shown = CliRunner().invoke(app, [*opts, "compositions", "show", f"{ns}/cli-router@prod", "--json"])
        assert json.loads(shown.stdout)["routing"]["top_k"] == 1
        listed = CliRunner().invoke(app, [*opts, "compositions", "ls", "--q", "cli-router"])
        assert f"{ns}/cli-router" in listed.stdout
    theirs = peft.PeftModel.from_pretrained(tiny_llama(), str(experts[0][1]), adapter_name="a")
    theirs.load_adapter(str(experts[1][1]), adapter_name="b")
    theirs.add_weighted_adapter(["a", "b"], [0.5, -1.25], "mix", combination_type="cat")
    theirs.set_adapter("mix")
    torch.testing.assert_close(got, logits(theirs.eval()), atol=1e-5, rtol=1e-5)


def test_members_must_be_readable_and_fit_one_base(server: Server, tmp_path: Path) -> None:
    ns, other = uniq("owner"), uniq("stranger")
    llama = register_tiny(server, tmp_path, "llama")
    gpt2 = register_tiny(server, tmp_path, "gpt2")
    with Client(server.url, server.token(ns, "write"), cache_dir=tmp_path / "w", quiet=True) as c:
        public = _push_library(c, ns, llama, tmp_path, 1, 90)[0][0]
        secret = f"{ns}/secret"
        c.push(saved_adapter(tmp_path / "secret", seed=91), secret, base_model=llama, private=True)
        c.push(saved_adapter(tmp_path / "g", arch="gpt2", seed=92), f"{ns}/gpt", base_model=gpt2)
        with pytest.raises(ValidationFailed, match="different base models"):
            c.create_composition(f"{ns}/bad", [public, f"{ns}/gpt"], {"kind": "stacked"})
        with pytest.raises(RegistryError, match="top_k=3"):
            c.create_composition(f"{ns}/bad", [public, secret], {"kind": "arrow", "top_k": 3})
        made = c.create_composition(f"{ns}/hidden", [public, secret], {"kind": "stacked"})
        assert made["version"] == 1
        assert c.http.json("GET", f"/api/v1/compositions/{ns}/hidden")["visibility"] == "private"
    with Client(server.url, server.token(other, "write"), cache_dir=tmp_path / "o", quiet=True) as stranger:
        with pytest.raises(RegistryNotFound):  # a member the caller cannot read
            stranger.create_composition(f"{other}/steal", [public, secret], {"kind": "stacked"})
        with pytest.raises(RegistryNotFound):  # the composition is private with its member
            stranger.composition(f"{ns}/hidden")
        assert stranger.http.json("GET", "/api/v1/compositions", params={"q": "hidden"})["items"] == []
    assert httpx.get(f"{server.url}/compositions/{ns}/hidden").status_code == 404
    with Client(server.url, cache_dir=tmp_path / "anon", quiet=True) as anon, pytest.raises(RegistryNotFound):
        anon.load(tiny_gpt2(), f"{ns}/hidden")


def test_composition_answers_carry_etags_and_follow_the_caching_rules(server: Server, tmp_path: Path) -> None:
    ns = uniq("etag")
    base = register_tiny(server, tmp_path, "llama")
    token = server.token(ns, "write")
    auth = {"Authorization": f"Bearer {token}"}
    root = f"{server.url}/api/v1/compositions/{ns}"
    with Client(server.url, token, cache_dir=tmp_path / "w", quiet=True) as c:
        experts = [e for e, _ in _push_library(c, ns, base, tmp_path, 2, 110)]
        made = c.create_composition(f"{ns}/open", experts, {"kind": "arrow", "top_k": 1}, alias="prod")
        commit = made["commit"]
        answers = {ref: httpx.get(f"{root}/open/versions/{ref}", headers=auth) for ref in ("1", commit, "prod")}
        for ref, answer in answers.items():
            assert answer.status_code == 200 and answer.headers["etag"].startswith('W/"'), ref
        assert answers["1"].headers["cache-control"] == "public, max-age=31536000, immutable"
        assert answers[commit].headers["cache-control"] == "public, max-age=31536000, immutable"
        assert answers["prod"].headers["cache-control"] == "public, no-cache"
        tag = answers["prod"].headers["etag"]
        again = httpx.get(f"{root}/open/versions/prod", headers={**auth, "If-None-Match": tag})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == tag

        top = httpx.get(f"{root}/open", headers=auth)
        assert top.status_code == 200 and top.headers["cache-control"] == "public, no-cache"
        assert httpx.get(f"{root}/open", headers={**auth, "If-None-Match": top.headers["etag"]}).status_code == 304
        listed = httpx.get(f"{root}/open/versions", headers=auth)
        assert listed.headers["cache-control"] == "public, no-cache"

        (proto,) = made["files"]
        first = httpx.get(proto["url"], headers=auth)
        assert first.headers["etag"] == f'"{proto["sha256"]}"'
        assert httpx.get(proto["url"], headers={**auth, "If-None-Match": first.headers["etag"]}).status_code == 304

        c.create_composition(f"{ns}/open", list(reversed(experts)), {"kind": "stacked"})  # version 2 moves latest
        moved = httpx.get(f"{root}/open", headers={**auth, "If-None-Match": top.headers["etag"]})
        assert moved.status_code == 200 and moved.headers["etag"] != top.headers["etag"]
        assert moved.json()["routing"] == "stacked"

        # a member made private later: every answer about the composition becomes private, even by commit
        r = httpx.patch(f"{server.url}/api/v1/adapters/{experts[0]}", json={"visibility": "private"},
                        headers={"Authorization": f"Bearer {server.token(ns, 'admin')}"})
        assert r.status_code == 200, r.text
        for url in (f"{root}/open", f"{root}/open/versions/{commit}", f"{root}/open/versions", proto["url"]):
            hidden = httpx.get(url, headers=auth)
            assert hidden.status_code == 200 and hidden.headers["cache-control"] == "private, no-cache", url
        assert httpx.get(f"{root}/open/versions/{commit}").status_code == 404  # and strangers see nothing


def test_router_composition_trains_publishes_loads_and_exports_for_peft(server: Server, tmp_path: Path) -> None:
    from safetensors.torch import save as save_safetensors

    import sdk
    from sdk.tuners.poly.skills import ROUTER_FILE

    ns = uniq("poly")
    base = register_tiny(server, tmp_path, "llama")
    tasks = torch.tensor([0, 1, 2])
    ids = token_ids()[:1].repeat(3, 1)
    with Client(server.url, server.token(ns, "write"), cache_dir=tmp_path / "w", quiet=True) as c:
        experts = [e for e, _ in _push_library(c, ns, base, tmp_path, 3, 130)]
        model = c.poly_over_members(tiny_llama(), experts, n_tasks=3)
        assert model.get_nb_trainable_parameters()[0] == 2 * 3 * 3 * 3  # 2 layers × q, v, down: 3×3 logits each
        g = torch.Generator().manual_seed(0)
        data = [{"input_ids": (s := torch.randint(0, 100, (8,), generator=g)), "labels": s, "task_ids": i % 3}
                for i in range(12)]
        sdk.train(model, data, max_steps=4, batch_size=3, learning_rate=5e-2, progress=False)
        model.eval()
        with torch.no_grad():
            expected = model(input_ids=ids, task_ids=tasks).logits
        made = c.create_composition(f"{ns}/routed", model.poly_refs, {"kind": "router", "n_tasks": 3},
                                    router=model, alias="prod")
        assert made["routing"] == {"kind": "router", "n_tasks": 3, "n_splits": 1}
        (stored,) = made["files"]
        assert stored["filename"] == ROUTER_FILE
        raw = httpx.get(stored["url"], headers={"Authorization": f"Bearer {server.token(ns, 'read')}"}).content
        assert hashlib.sha256(raw).hexdigest() == stored["sha256"]
        assert load_safetensors(raw)["model.layers.0.self_attn.q_proj"].shape == (3, 3)

        routed = c.load(tiny_llama(), f"{ns}/routed@prod")
        with torch.no_grad():
            got = routed(input_ids=ids, task_ids=tasks).logits
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
        assert (got[0] - got[1]).abs().max() > 1e-4  # the same prompt, routed by task, answers differently

        # a router that does not fit: wrong task count, or trained over the members in another order
        bad = {k: v[:2] for k, v in load_safetensors(raw).items()}
        with pytest.raises(ValidationFailed, match=r"expected \[3, 3\]"):
            c.create_composition(f"{ns}/bad", model.poly_refs, {"kind": "router", "n_tasks": 3},
                                 router=save_safetensors(bad))
        with pytest.raises(ValidationFailed, match="other members"):
            c.create_composition(f"{ns}/bad", list(reversed(model.poly_refs)), {"kind": "router", "n_tasks": 3},
                                 router=model)
        page = httpx.get(f"{server.url}/compositions/{ns}/routed")
        assert page.status_code == 200 and "router" in page.text and ROUTER_FILE in page.text
        assert f"{experts[2]}@1</a> → {ns}/routed@1 (Poly skill 2)" in page.text
        opts = ["--url", server.url, "--token", server.token(ns, "read"), "--cache-dir", str(tmp_path / "cli")]
        shown = CliRunner().invoke(app, [*opts, "compositions", "show", f"{ns}/routed@prod"])
        assert shown.exit_code == 0 and f"file: {ROUTER_FILE}" in shown.stdout, shown.output

    # the loaded composition is a plain PEFT Poly adapter: peft loads the export and answers the same
    routed.save_pretrained(tmp_path / "export")
    theirs = peft.PeftModel.from_pretrained(tiny_llama(), tmp_path / "export").eval()
    with torch.no_grad():
        answer = theirs.base_model(input_ids=ids, task_ids=tasks)  # PolyModel.forward hands task_ids to its layers
        torch.testing.assert_close(answer.logits, expected, atol=1e-5, rtol=1e-5)


def test_router_skill_routed_alone_is_that_member(tmp_path: Path) -> None:
    from sdk.tuners.poly.skills import poly_over_loras, router_tensors

    folders = [saved_adapter(tmp_path / f"m{i}", seed=140 + i) for i in range(3)]
    poly = poly_over_loras(tiny_llama(), folders, n_tasks=3, n_splits=2).eval()
    one_hot = torch.full((3, 6), -40.0)
    for task in range(3):
        one_hot[task, [task, 3 + task]] = 40.0  # both splits of task t pick member t
    router = {path: one_hot for path in router_tensors(poly)}
    poly = poly_over_loras(tiny_llama(), folders, n_tasks=3, n_splits=2, router=router).eval()
    with torch.no_grad():
        got = poly(input_ids=token_ids()[:1].repeat(3, 1), task_ids=torch.tensor([0, 1, 2])).logits
    for i, folder in enumerate(folders):
        alone = logits(sdk_load(folder))[:1]
        torch.testing.assert_close(got[i:i + 1], alone, atol=1e-5, rtol=1e-5)


def sdk_load(folder: Path) -> torch.nn.Module:
    from sdk import AdapterModel

    return AdapterModel.from_pretrained(tiny_llama(), folder).eval()
