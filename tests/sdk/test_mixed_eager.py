"""Eager mixed batches: the tighter eager layout (no filler group, no minimum group size), the two ways the
up-projection returns to the samples (decode vs prefill shapes), and one gather per shared input."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch
from _tiny import ids, tiny_llama
from torch.utils._python_dispatch import TorchDispatchMode

import sdk
from sdk.routing import Routing


class OpLog(TorchDispatchMode):
    """Records the aten ops a forward runs, with the shape of their first argument."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        first = args[0] if args and isinstance(args[0], torch.Tensor) else None
        self.calls.append((func.overloadpacket.__name__, tuple(first.shape) if first is not None else ()))
        return func(*args, **(kwargs or {}))

    def count(self, name: str) -> int:
        return Counter(n for n, _ in self.calls)[name]

    def shapes(self, name: str) -> list[tuple[int, ...]]:
        return [s for n, s in self.calls if n == name]


def three_adapters(r: int = 4, targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
                   ) -> sdk.AdapterModel:
    m = None
    for i, name in enumerate(("a", "b", "c")):
        cfg = sdk.LoraConfig(r=r, lora_alpha=2 * r + i, target_modules=list(targets), init_lora_weights=False)
        if m is None:
            m = sdk.get_peft_model(tiny_llama(), cfg, name)
        else:
            m.add_adapter(name, cfg)
    assert m is not None
    return m.eval()


def per_sample_reference(m: sdk.AdapterModel, x: torch.Tensor, names: list[str]) -> torch.Tensor:
    """Each sample run alone with its own adapter (or none)."""
    rows = []
    with torch.no_grad():
        for i, n in enumerate(names):
            if n == "__base__":
                with m.disable_adapter():
                    rows.append(m(input_ids=x[i : i + 1]).logits)
            else:
                m.set_adapter(n)
                rows.append(m(input_ids=x[i : i + 1]).logits)
    return torch.cat(rows)


def test_eager_layout_drops_the_filler_group_and_the_minimum_group_size() -> None:
    one = Routing.build(["a", "__base__", "a"])
    assert one.groups == 2 and one.group_names == ("a", "__base__")  # compiled: a filler group
    assert one.eager_groups == 1 and one.eager_size == 2
    assert one.eager_gather.tolist() == [0, 2] and one.has_base
    assert one.eager_back.tolist()[0] == 0 and one.eager_back.tolist()[2] == 1

    singles = Routing.build(["b", "a", "c"])
    assert singles.group_size == 2  # compiled: groups of at least 2 rows
    assert singles.eager_size == 1 and singles.eager_gather.tolist() == [0, 1, 2]
    assert singles.eager_back.tolist() == [0, 1, 2] and singles.eager_pick.tolist() == [0, 1, 2]
    assert not singles.has_base

    even = Routing.build(["a", "b", "a", "b"])  # both layouts agree: the same tensors, nothing built twice
    assert even.eager_back is even.back and even.eager_gather.data_ptr() == even.gather.data_ptr()
    assert even.eager_groups == even.groups == 2 and even.eager_size == even.group_size == 2

    uneven = Routing.build(["a", "b", "a", "__base__", "a"])
    assert uneven.eager_groups == 2 and uneven.eager_size == 3
    assert uneven.eager_pick.tolist() == [0, 1, 0, 0, 0] and uneven.own.tolist() == [1, 1, 1, 0, 1]


def test_eager_forward_runs_no_filler_group() -> None:
    m = three_adapters()
    x = ids(batch=3, seq=5)
    log = OpLog()
    with torch.no_grad(), log:
        m(input_ids=x, adapter_names=["b", "__base__", "b"])
    downs = [s for s in log.shapes("bmm") if s[-1] == 32]  # the down-projections: (groups, rows, hidden)
    assert downs and all(s == (1, 2 * 5, 32) for s in downs), downs  # one group of two samples, no filler


@pytest.mark.parametrize("seq, r, up", [(1, 8, "bmm"), (6, 4, "baddbmm")])
@pytest.mark.parametrize("grad", [False, True])
def test_eager_mixed_batch_equals_each_sample_alone(seq: int, r: int, up: str, grad: bool) -> None:
    """Decode shapes (fewer rows per sample than half the rank) add grouped rows gathered back; prefill shapes
    add each sample's B in place with one ``baddbmm``. Both give each sample its own adapter's output."""
    m = three_adapters(r=r)
    x = ids(batch=7, seq=seq, seed=5)
    names = ["a", "c", "__base__", "a", "b", "a", "__base__"]
    want = per_sample_reference(m, x, names)
    log = OpLog()
    with torch.set_grad_enabled(grad), log:
        got = m(input_ids=x, adapter_names=names).logits
    torch.testing.assert_close(got.detach(), want, atol=1e-5, rtol=1e-4)
    ups = log.count("baddbmm") + log.count("baddbmm_")  # in place without autograd
    assert ups == (8 if up == "baddbmm" else 0)  # 2 layers x 4 projections
    assert log.count("baddbmm_") == (8 if up == "baddbmm" and not grad else 0)
    assert log.count("index_add") == 0 and log.count("scatter_add") == 0  # never a scatter


def test_a_shared_input_is_gathered_once() -> None:
    """q, k and v read the same input: the eager forward gathers it into group order once per decoder layer."""
    m = three_adapters(targets=("q_proj", "k_proj", "v_proj"))
    x = ids(batch=4, seq=3)
    log = OpLog()
    with torch.no_grad(), log:
        m(input_ids=x, adapter_names=["a", "b", "a", "c"])
    input_gathers = [s for s in log.shapes("index_select") if s == (4, 3, 32)]
    assert len(input_gathers) == 2  # two decoder layers


def test_grid_orders_are_recognised() -> None:
    turns = Routing.build(["a", "b", "c"] * 3)
    assert turns.eager_grid == (1, 3)  # sample u + 3·j is row j of group u
    assert Routing.build(["a", "a", "b", "b", "c", "c"]).eager_grid == (2, 1)
    assert Routing.build(["a", "a", "a"]).eager_grid == (3, 1)
    assert Routing.build(["b", "a", "c"]).eager_grid == (1, 1)
    assert Routing.build(["a", "b", "b", "a"]).eager_grid is None  # groups [0, 3] and [1, 2]: no grid
    assert Routing.build(["a", "b", "a"]).eager_grid is None  # padding in the eager layout
    assert Routing.build(["a", "__base__", "b", "__base__"]).eager_grid is None  # base samples are in no group


@pytest.mark.parametrize("order", ["turns", "blocks"])
@pytest.mark.parametrize("seq, r", [(1, 8), (3, 8), (6, 4)])
@pytest.mark.parametrize("grad", [False, True])
def test_grid_orders_equal_each_sample_alone(order: str, seq: int, r: int, grad: bool) -> None:
    """Samples on a grid are read and (without autograd, at decode shapes) written through strided views."""
    m = three_adapters(r=r)
    names = ["a", "b", "c"] * 2 if order == "turns" else ["a", "a", "b", "b", "c", "c"]
    x = ids(batch=6, seq=seq, seed=11)
    want = per_sample_reference(m, x, names)
    log = OpLog()
    with torch.set_grad_enabled(grad), log:
        got = m(input_ids=x, adapter_names=names).logits
    torch.testing.assert_close(got.detach(), want, atol=1e-5, rtol=1e-4)
    gathers = [s for s in log.shapes("index_select") if s[0] == 6]  # rows picked from a (batch, …) tensor
    views = seq == 1 or order == "blocks"  # interleaved samples of several rows have no strided view
    decode = 2 * seq < r
    # prefill without autograd: each grid row of samples (turns) or each group (blocks) is read and added to in
    # place, with one bmm and one baddbmm_ per projection and grid row: nothing gathered
    in_place = not decode and not grad
    input_gathers = 0 if views or in_place else 4  # 2 decoder layers: q/k/v's shared input and o's
    # decode without autograd: added in place through a view; else gathered back (prefill: the down-projected
    # rows, then one baddbmm each), one per projection
    back_gathers = 0 if (views and decode and not grad) or in_place else 8
    assert len(gathers) == input_gathers + back_gathers, log.shapes("index_select")
    if in_place:  # 8 projections; turns: 2 grid rows of 3 samples each
        assert log.count("baddbmm_") == (16 if order == "turns" else 8)
        assert log.count("bmm") == log.count("baddbmm_")
    assert log.count("index_add") == 0 and log.count("scatter_add") == 0


def test_grid_order_backward_equals_each_sample_alone() -> None:
    """Gradients flow through the strided views: the input gradient of a grid-ordered batch is each sample's own."""
    m = three_adapters(r=8)
    names = ["a", "b", "c"] * 2
    emb = m.base_model.model.embed_tokens(ids(batch=6, seq=1, seed=4)).detach()
    assert Routing.build(names).eager_grid == (1, 3)
    batch = emb.clone().requires_grad_(True)
    m(inputs_embeds=batch, adapter_names=names).logits.square().sum().backward()
    for i, n in enumerate(names):
        m.set_adapter(n)
        alone = emb[i : i + 1].clone().requires_grad_(True)
        m(inputs_embeds=alone).logits.square().sum().backward()
        assert alone.grad is not None and batch.grad is not None
        torch.testing.assert_close(batch.grad[i : i + 1], alone.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("names", [["c", "a", "b"], ["b", "b", "b", "b"], ["a", "b"] * 3])
def test_prefill_on_a_grid_is_added_in_place(names: list[str]) -> None:
    """One sample per adapter, one adapter for every sample, and three grid rows of two: each sample gets its own
    adapter, and the forward gathers no row and copies no B."""
    m = three_adapters(r=4)
    x = ids(batch=len(names), seq=5, seed=8)
    want = per_sample_reference(m, x, names)
    with torch.no_grad():
        m(input_ids=x, adapter_names=names)  # the first call of a mix picks its stacks (index_select)
    log = OpLog()
    with torch.no_grad(), log:
        got = m(input_ids=x, adapter_names=names).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert Routing.build(names).eager_grid is not None
    assert log.count("index_select") == 0, log.shapes("index_select")
    rows_of_grid = 3 if names == ["a", "b"] * 3 else 1
    assert log.count("baddbmm_") == 8 * rows_of_grid  # 2 decoder layers x 4 projections


def test_a_repeated_mix_reuses_its_routing_and_keeps_no_input() -> None:
    """A decode loop with the same batch builds its routing once; the cached routing holds no input after the
    call, a copied model starts without it, and at most ``RoutingCache.SIZE`` are kept, least recently used
    dropped first."""
    import copy

    from sdk.routing import RoutingCache

    m = three_adapters(targets=("q_proj", "k_proj", "v_proj"))
    names = ["a", "b", "a", "c"]  # not on a grid: q/k/v's input is gathered (and remembered) during the call
    x = ids(batch=4, seq=2, seed=3)
    seen: list[object] = []
    layer = m.base_model.model.layers[0].self_attn.q_proj
    handle = layer.register_forward_pre_hook(lambda mod, args: seen.append(mod._route))
    held: list[bool] = []  # k_proj runs after q_proj gathered the shared input into the routing
    k_hook = m.base_model.model.layers[0].self_attn.k_proj.register_forward_pre_hook(
        lambda mod, args: held.append(mod._route._gathered is not None)
    )
    with torch.no_grad():
        first = m(input_ids=x, adapter_names=names).logits
        second = m(input_ids=x, adapter_names=names).logits
        m(input_ids=x, adapter_names=["c", "b", "a", "a"])
    handle.remove()
    k_hook.remove()
    assert held == [True, True, True]
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert seen[0] is seen[1] and seen[2] is not seen[0]
    assert seen[0]._gathered is None  # type: ignore[attr-defined]
    assert not copy.deepcopy(m)._routing_cache._by_key
    cache = RoutingCache()
    routings = [cache.get((f"n{i}",), "cpu") for i in range(RoutingCache.SIZE)]
    assert cache.get(("n0",), "cpu") is routings[0]  # used again: now the most recent
    cache.get(("new",), "cpu")
    assert len(cache._by_key) == RoutingCache.SIZE
    assert cache.get(("n0",), "cpu") is routings[0]
    assert cache.get(("n1",), "cpu") is not routings[1]  # the least recently used went first
