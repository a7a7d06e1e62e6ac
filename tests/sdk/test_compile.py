"""``torch.compile``: no graph break for any method in any state, compiled results equal eager ones in
eval and in training (gradients too), mixed batches that do not recompile for a new assignment of
adapters to samples, and the routing gate between threads.

Graphs are captured with Dynamo's cheap backends (``explain``, ``eager``, ``aot_eager``: the last one
also traces the backward pass): inductor's C++ code generation takes minutes per model on this CPU.
``bench/bench_compile.py`` compiles a Llama-shaped model with inductor and checks the same things
there. The matrix of methods × states runs on :class:`~_tiny.ToyLM` (one block, Llama's layer names),
which Dynamo traces in a fraction of a second; a one-layer Llama covers the prompt methods and LoRA
inside a real transformers model.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import torch
from _tiny import ToyLM, ids, tiny_llama
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend

import sdk

T = ["q_proj", "v_proj"]
LAYER_METHODS: dict[str, Callable[[], sdk.AdapterConfig]] = {
    "lora": lambda: sdk.LoraConfig(r=4, target_modules=T, init_lora_weights=False),
    "dora": lambda: sdk.LoraConfig(r=4, target_modules=T, init_lora_weights=False, use_dora=True),
    "ia3": lambda: sdk.IA3Config(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"],
                                 init_ia3_weights=False),
    "loha": lambda: sdk.LoHaConfig(r=4, target_modules=T, init_weights=False),
    "lokr": lambda: sdk.LoKrConfig(r=4, target_modules=T, init_weights=False),
}
PROMPT_METHODS: dict[str, Callable[[], sdk.AdapterConfig]] = {
    "prompt": lambda: sdk.PromptTuningConfig(num_virtual_tokens=3, task_type="CAUSAL_LM"),
    "prefix": lambda: sdk.PrefixTuningConfig(num_virtual_tokens=3, task_type="CAUSAL_LM"),
    "p_tuning": lambda: sdk.PromptEncoderConfig(num_virtual_tokens=3, task_type="CAUSAL_LM", encoder_hidden_size=8),
}
X = ids(batch=4, seq=6)
X6 = ids(batch=6, seq=5)
#: Two assignments with the same group layout (a group of 2, a group of 1 padded to 2, one base sample).
MIXED = (["default", "other", "other", "__base__"], ["other", "__base__", "default", "other"])


def _model(configs: dict[str, Callable[[], sdk.AdapterConfig]], method: str, second: bool = True,
           llama: bool = False) -> sdk.AdapterModel:
    model = sdk.get_peft_model(tiny_llama(layers=1) if llama else ToyLM(), configs[method]())
    if second:
        model.add_adapter("other", configs[method]())
    return model.eval()


def _one_graph(model: nn.Module, **inputs: Any) -> None:
    torch._dynamo.reset()
    report = torch._dynamo.explain(model)(**inputs)
    assert report.graph_break_count == 0, [str(b.reason).splitlines()[0] for b in report.break_reasons]
    assert report.graph_count == 1


@pytest.mark.parametrize("method", LAYER_METHODS)
def test_layer_methods_trace_as_one_graph_in_every_state(method: str) -> None:
    model = _model(LAYER_METHODS, method)
    with torch.no_grad():
        _one_graph(model, input_ids=X)  # one adapter
        model.set_adapter(["default", "other"])
        _one_graph(model, input_ids=X)  # several active adapters
        model.set_adapter("default")
        _one_graph(model, input_ids=X, adapter_names=MIXED[0])  # a mixed batch
        with model.disable_adapter():
            _one_graph(model, input_ids=X)
        model.merge_adapter()
        _one_graph(model, input_ids=X)
        model.unmerge_adapter()
    model.train()
    _one_graph(model, input_ids=X, labels=X)


@pytest.mark.parametrize("method", PROMPT_METHODS)
def test_prompt_methods_trace_as_one_graph(method: str) -> None:
    model = _model(PROMPT_METHODS, method, second=False, llama=True)
    with torch.no_grad():
        _one_graph(model, input_ids=X)
        if method == "prompt":  # disabled: the hook steps aside (the same code for every prompt method)
            with model.disable_adapter():
                _one_graph(model, input_ids=X)
    model.train()
    _one_graph(model, input_ids=X, labels=X)


def test_lora_in_a_transformers_model_traces_as_one_graph() -> None:
    model = _model(LAYER_METHODS, "lora", llama=True)
    with torch.no_grad():
        _one_graph(model, input_ids=X, adapter_names=MIXED[0])
    model.train()
    _one_graph(model, input_ids=X, labels=X)


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


@pytest.mark.parametrize("method", [*LAYER_METHODS, "prompt", "prefix", "llama-lora"])
def test_fullgraph_compile_trains_like_eager(method: str) -> None:
    """Forward and backward through ``torch.compile(model, fullgraph=True)``: same loss, same gradients."""
    llama = method in PROMPT_METHODS or method.startswith("llama-")
    model = _model(LAYER_METHODS | PROMPT_METHODS, method.removeprefix("llama-"), second=False, llama=llama)
    model.train()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    loss = compiled(input_ids=X, labels=X).loss
    loss.backward()
    got = _grads(model)
    model.zero_grad(set_to_none=True)
    want_loss = model(input_ids=X, labels=X).loss
    want_loss.backward()
    want = _grads(model)
    torch.testing.assert_close(loss, want_loss)
    assert got.keys() == want.keys() and got
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-6, rtol=1e-5, msg=name)
    assert any(g.abs().sum() > 0 for g in want.values())


@pytest.mark.parametrize("method", ["lora", "dora", "ia3", "loha"])
def test_compiled_mixed_batches_reuse_the_graph_for_new_assignments(method: str) -> None:
    model = _model(LAYER_METHODS, method)
    counter = CompileCounterWithBackend("eager")
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    with torch.no_grad():
        for names in MIXED:
            got = compiled(input_ids=X, adapter_names=names).logits
            want = model(input_ids=X, adapter_names=names).logits
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
        plain = compiled(input_ids=X).logits
    assert counter.frame_count == 2  # the mixed graph once, then the plain one: no recompile per assignment
    assert not torch.allclose(got, plain)  # the routing did change the outputs


#: Mixes of one input shape whose group count, group size, ranks and ``__base__`` samples all differ.
MIXES = (["default", "b", "b", "c", "__base__", "d"], ["b", "default", "c", "c", "d", "d"],
         ["default"] * 3 + ["b"] * 3, ["c"] * 6, ["default"] * 5 + ["__base__"], ["d", "c", "b", "default", "d", "c"])


def _four_adapters(method: str) -> sdk.AdapterModel:
    """``default`` plus ``b``, ``c``, ``d`` of ranks 8, 2, 4 (DoRA on ``c`` only for the dora case)."""
    model = _model(LAYER_METHODS, method, second=False)
    for name, r in (("b", 8), ("c", 2), ("d", 4)):
        config = (sdk.LoHaConfig(r=r, target_modules=T, init_weights=False) if method == "loha" else
                  sdk.LoraConfig(r=r, target_modules=T, init_lora_weights=False, use_dora=method == "dora"
                                 and name == "c"))
        model.add_adapter(name, config)
    return model.eval()


@pytest.mark.parametrize("method", ["lora", "dora", "loha"])
def test_one_compiled_graph_serves_every_mix_of_adapters(method: str) -> None:
    """A new mix (other group count or size, other ranks, some ``__base__`` samples) reuses the graph."""
    model = _four_adapters(method)
    counter = CompileCounterWithBackend("eager")
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=counter)
    outputs = []
    with torch.no_grad():
        for names in MIXES:
            got = compiled(input_ids=X6, adapter_names=names).logits
            torch.testing.assert_close(got, model(input_ids=X6, adapter_names=names).logits, atol=1e-6, rtol=1e-5)
            outputs.append(got)
    assert counter.frame_count == 1, counter.frame_count
    assert not torch.allclose(outputs[0], outputs[1])


def test_compiled_mixed_batch_returns_rows_by_gather_not_scatter() -> None:
    """The grouped rows go back to their samples by a gather: inductor turns a scatter (``index_add``) into
    one atomic add per element on CPU, which cost the compiled mixed batch more than its matmuls."""
    graphs: list[torch.fx.GraphModule] = []

    def capture(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Callable[..., Any]:
        graphs.append(gm)
        return gm.forward

    model = _four_adapters("lora")
    torch._dynamo.reset()
    with torch.no_grad():
        got = torch.compile(model, backend=capture, fullgraph=True)(input_ids=X6, adapter_names=MIXES[0]).logits
        torch.testing.assert_close(got, model(input_ids=X6, adapter_names=MIXES[0]).logits, atol=1e-6, rtol=1e-5)
    ops = [str(n.target) for g in graphs for n in g.graph.nodes if n.op in ("call_function", "call_method")]
    assert any("bmm" in op for op in ops)
    assert not [op for op in ops if "index_add" in op or "scatter" in op]


def test_a_mixed_batch_never_leaks_into_a_concurrent_call_of_the_same_model() -> None:
    """The routing lives on the model's layers during a mixed call; the gate keeps other threads' calls out."""
    model = _model(LAYER_METHODS, "lora")
    with torch.no_grad():
        plain_ref = model(input_ids=X).logits
        mixed_ref = model(input_ids=X, adapter_names=MIXED[0]).logits
    assert not torch.allclose(plain_ref, mixed_ref)
    wrong: list[str] = []

    def run(kwargs: dict[str, Any], ref: torch.Tensor, label: str) -> None:
        with torch.no_grad():
            for _ in range(15):
                if not torch.allclose(model(input_ids=X, **kwargs).logits, ref, atol=1e-5, rtol=1e-4):
                    wrong.append(label)

    threads = [threading.Thread(target=run, args=({}, plain_ref, "plain")),
               threading.Thread(target=run, args=({"adapter_names": MIXED[0]}, mixed_ref, "mixed")),
               threading.Thread(target=run, args=({}, plain_ref, "plain"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert not wrong


def test_a_nested_mixed_call_gives_the_outer_routing_back() -> None:
    """A hook that calls the model again with its own ``adapter_names`` sees its routing, then the outer one."""
    model = _model(LAYER_METHODS, "lora")
    inner_names = ["other", "other", "default", "default"]
    with torch.no_grad():
        want_outer = model(input_ids=X, adapter_names=MIXED[0]).logits
        want_inner = model(input_ids=X, adapter_names=inner_names).logits
    seen: list[torch.Tensor] = []
    calls: list[int] = []
    layer = model.base_model.down_proj

    def hook(module: nn.Module, args: Any) -> None:
        if not calls:
            calls.append(1)
            seen.append(model(input_ids=X, adapter_names=inner_names).logits)

    handle = layer.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            outer = model(input_ids=X, adapter_names=MIXED[0]).logits
    finally:
        handle.remove()
    torch.testing.assert_close(seen[0], want_inner)
    torch.testing.assert_close(outer, want_outer)
