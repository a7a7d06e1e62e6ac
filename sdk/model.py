"""``AdapterModel``: a model with named adapters that can be switched, mixed, merged and saved.

It holds no per-method logic: methods inject their layers through the registry's tuners, and
every operation here goes through the :class:`~sdk.layers.AdapterModule` protocol.
"""

from __future__ import annotations

import contextlib
import copyreg
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, SupportsIndex

import torch
from torch import nn

from .config import AdapterConfig
from .errors import AdapterNameError, AdapterStateError, ConfigError, MergeError, MixedBatchError
from .formats import adapter_state_dict, load_adapter_state, read_adapter_weights, read_config, save_adapter
from .hub_loading import resolve_adapter_source
from .integrations.peft_view import peft_view
from .layers import AdapterLayer, AdapterModule, iter_adapter_modules, replace_module
from .methods import composition_problem, config_from_dict, get_method, merge_refusal
from .provenance import write_provenance
from .quantization import keep_trainable_layout_everywhere
from .routing import BASE_ADAPTER, Routing, RoutingCache, RoutingGate

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$")


class AdapterModel(nn.Module):
    """Wraps ``base_model`` (changed in place) and forwards ``forward``/``generate``/attributes to it."""

    def __init__(self, model: nn.Module, config: AdapterConfig | None = None, adapter_name: str = "default") -> None:
        super().__init__()
        self.base_model = model
        self.peft_config: dict[str, AdapterConfig] = {}
        self._active: list[str] = []
        self._gate = RoutingGate()
        self._routings: list[Routing] = []  # mixed batches running (nested calls stack up)
        self._routing_cache = RoutingCache()
        self._call_inputs: list[dict[str, Any]] = []  # per-sample inputs of the calls running (nested stack up)
        self._module_list: list[AdapterModule] | None = None  # adapter modules, until the structure changes
        self._readers: tuple[list[AdapterModule], frozenset[str]] | None = None
        for p in model.parameters():
            p.requires_grad_(False)
        if config is not None:
            self.add_adapter(adapter_name, config)
            self.set_adapter(adapter_name)

    # --- attribute forwarding ------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_model":
                raise
            return getattr(self.base_model, name)

    @property
    def _hf_peft_config_loaded(self) -> bool:
        """Adapters are attached: transformers' ``Trainer`` reads this (like on its own PEFT-integrated
        models) and then fine-tunes a quantized base through them instead of refusing it."""
        return bool(self.peft_config)

    def get_base_model(self) -> nn.Module:
        """The wrapped model (with adapter layers in it)."""
        return self.base_model

    # --- adapters ------------------------------------------------------------------------------
    @property
    def active_adapters(self) -> list[str]:
        """Names of the adapters currently applied, in order."""
        return list(self._active)

    @property
    def active_adapter(self) -> str:
        """The first active adapter (PEFT's single-adapter accessor)."""
        return self._active[0] if self._active else ""

    @property
    def adapter_names(self) -> list[str]:
        """All adapters in the model."""
        return list(self.peft_config)

    def _modules_with_adapters(self) -> Iterator[tuple[str, AdapterModule]]:
        return iter_adapter_modules(self.base_model)

    def _adapter_modules(self) -> list[AdapterModule]:
        """Every adapter module, cached until adapters are added or removed (read on each mixed batch)."""
        if self._module_list is None:
            self._module_list = [m for _, m in self._modules_with_adapters()]
        return self._module_list

    def _input_readers(self) -> tuple[list[AdapterModule], frozenset[str]]:
        """The adapter modules that read per-sample call inputs, and the names of those inputs (cached like
        :meth:`_adapter_modules`)."""
        if self._readers is None:
            readers = [m for m in self._adapter_modules() if m.call_inputs]
            self._readers = (readers, frozenset(n for m in readers for n in m.call_inputs))
        return self._readers

    def _structure_changed(self) -> None:
        self._module_list = None
        self._readers = None

    def _check_names(self, names: Sequence[str]) -> None:
        unknown = [n for n in names if n not in self.peft_config]
        if unknown:
            raise AdapterNameError(f"unknown adapter(s) {unknown}; this model has {self.adapter_names}")

    def add_adapter(self, adapter_name: str, config: AdapterConfig) -> None:
        """Inject a new adapter (not activated; call :meth:`set_adapter`)."""
        if adapter_name in self.peft_config:
            raise AdapterNameError(f"adapter {adapter_name!r} already exists; pick another name or delete it first")
        if adapter_name == BASE_ADAPTER or not _NAME_RE.match(adapter_name):
            raise AdapterNameError(
                f"invalid adapter name {adapter_name!r}: use letters, digits, '_' and '-' "
                f"(and not {BASE_ADAPTER!r}, which means 'no adapter' in mixed batches)"
            )
        if hasattr(nn.ParameterDict(), adapter_name):
            raise AdapterNameError(f"invalid adapter name {adapter_name!r}: it is an attribute of torch.nn.Module, "
                                   "which holds the adapter's weights; pick another name")
        if self._merged_names():
            raise AdapterStateError("cannot add an adapter while adapters are merged; call unmerge_adapter() first")
        tuner = get_method(config.peft_type).tuner
        clash = composition_problem(config.peft_type, {c.peft_type for c in self.peft_config.values()})
        if clash:
            raise AdapterStateError(f"cannot add adapter {adapter_name!r}: {clash}")
        if not config.base_model_name_or_path:
            config.base_model_name_or_path = _name_or_path(self.base_model)
        try:
            tuner.inject(self.base_model, config, adapter_name)
        finally:
            self._structure_changed()
        self.peft_config[adapter_name] = config
        self._update_trainable()

    def set_adapter(self, adapter_name: str | Sequence[str]) -> None:
        """Activate one adapter, or several at once (their outputs add up)."""
        names = [adapter_name] if isinstance(adapter_name, str) else list(adapter_name)
        self._check_names(names)
        if len(set(names)) != len(names):
            raise AdapterNameError(f"adapter names repeat in {names}")
        if self._merged_names():
            raise AdapterStateError("cannot switch adapters while adapters are merged; call unmerge_adapter() first")
        mods = list(self._modules_with_adapters())
        previous = list(self._active)
        try:
            for _, module in mods:
                module.set_active(names)
        except AdapterStateError:
            for _, module in mods:
                module.set_active(previous)
            raise
        self._active = names
        self._update_trainable()

    def delete_adapter(self, adapter_name: str) -> None:
        """Remove an adapter; wrappers left with no adapter give their base module back."""
        self._check_names([adapter_name])
        if adapter_name in self._merged_names():
            raise MergeError(f"adapter {adapter_name!r} is merged into the base weights; call unmerge_adapter() first")
        for path, module in list(self._modules_with_adapters()):
            if adapter_name in module.adapter_names():
                module.delete_adapter(adapter_name)
            if not module.adapter_names():
                replace_module(self.base_model, path, module.unwrap(merge=False))
        self._structure_changed()
        del self.peft_config[adapter_name]
        if adapter_name in self._active:
            rest = [n for n in self._active if n != adapter_name] or self.adapter_names[:1]
            self._active = []
            if rest:
                self.set_adapter(rest)

    def _update_trainable(self) -> None:
        for name, config in self.peft_config.items():
            train = name in self._active and not config.inference_mode
            for _, module in self._modules_with_adapters():
                if name in module.adapter_names():
                    for p in module.adapter_parameters(name):
                        p.requires_grad_(train)
            if train:
                get_method(config.peft_type).tuner.mark_trainable(self.base_model, config, name)
                keep_trainable_layout_everywhere(self.base_model)  # 4-bit layers must keep backpropagating

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Run the base model alone inside the block (merged adapters are unmerged, then merged back)."""
        merged = self._merged_names()
        if merged:
            self.unmerge_adapter()
        mods = [m for _, m in self._modules_with_adapters()]
        for m in mods:
            m.disabled = True
        try:
            yield
        finally:
            for m in mods:
                m.disabled = False
            if merged:
                self.merge_adapter(merged)

    # --- forward / generate -------------------------------------------------------------------
    def _routing(self, adapter_names: Sequence[str], args: Sequence[Any], kwargs: dict[str, Any], expand: int = 1
                 ) -> Routing:
        if self.training:
            raise MixedBatchError("mixed-adapter batches (adapter_names=...) are for inference; call model.eval()")
        if isinstance(adapter_names, str):
            raise MixedBatchError("adapter_names takes one adapter name per sample (a list), not a single string")
        if self._merged_names():
            raise MixedBatchError("mixed-adapter batches need unmerged adapters; call unmerge_adapter() first")
        names = list(adapter_names)
        self._check_names([n for n in set(names) if n != BASE_ADAPTER])
        batch, device = _batch_and_device(args, kwargs)
        if batch is not None and batch != len(names):
            raise MixedBatchError(
                f"adapter_names has {len(names)} entries but the batch has {batch} samples; give one per sample"
            )
        if device is None:
            device = next((p.device for p in self.base_model.parameters()), torch.device("cpu"))
        return self._routing_cache.get(tuple(n for n in names for _ in range(expand)), device)

    def _take_call_inputs(self, kwargs: dict[str, Any], expand: int) -> dict[str, Any] | None:
        """Remove the per-sample inputs the adapter modules read (Poly's ``task_ids``) from ``kwargs``."""
        wanted = self._input_readers()[1]
        if not wanted:
            return None
        taken = {n: kwargs.pop(n) for n in sorted(wanted) if n in kwargs}
        taken = {n: v for n, v in taken.items() if v is not None}
        if not taken:
            return None
        if expand > 1:  # generate() with beams or several sequences repeats each prompt
            taken = {n: v.repeat_interleave(expand, dim=0) if isinstance(v, torch.Tensor) else v
                     for n, v in taken.items()}
        return taken

    @torch.compiler.disable
    def _enter_call(self, adapter_names: Sequence[str] | None, args: Sequence[Any], kwargs: dict[str, Any],
                    expand: int = 1) -> _Entered:
        """Take the gate for one call; for a mixed batch give every adapter module its routing, and hand
        the call's per-sample inputs to the modules that read them."""
        inputs = self._take_call_inputs(kwargs, expand)
        routing = None if adapter_names is None else self._routing(adapter_names, args, kwargs, expand)
        exclusive = routing is not None or inputs is not None
        entered = _Entered(routing, self._gate.acquire(routed=exclusive), exclusive, inputs)
        try:
            if routing is not None:
                self._routings.append(routing)
                for m in self._adapter_modules():
                    m.begin_routing(routing)
            if inputs is not None:
                self._call_inputs.append(inputs)
                for m in self._input_readers()[0]:
                    m.begin_call(inputs)
        except BaseException:
            self._exit_call(entered)
            raise
        return entered

    @torch.compiler.disable
    def _exit_call(self, entered: _Entered) -> None:
        """Undo :meth:`_enter_call` (a nested call gives the outer routing and inputs back)."""
        try:
            if entered.inputs is not None and self._call_inputs and self._call_inputs[-1] is entered.inputs:
                self._call_inputs.pop()
                for m in self._input_readers()[0]:
                    if self._call_inputs:
                        m.begin_call(self._call_inputs[-1])
                    else:
                        m.end_call()
            if entered.routing is not None and self._routings and self._routings[-1] is entered.routing:
                self._routings.pop()
                entered.routing.end_call()
                for m in self._adapter_modules():
                    if self._routings:
                        m.begin_routing(self._routings[-1])
                    else:
                        m.end_routing()
        finally:
            self._gate.release(entered.exclusive, entered.token)

    @torch.compiler.disable(recursive=False)
    def forward(self, *args: Any, adapter_names: Sequence[str] | None = None, **kwargs: Any) -> Any:
        """Call the wrapped model; ``adapter_names`` picks an adapter per sample.

        In training mode, methods' extra loss terms (e.g. AdaLoRA's orthogonal regulariser) are
        added to ``output.loss`` when the output has one.

        ``torch.compile`` leaves this frame and its helpers alone: they only prepare a mixed batch's
        routing. It compiles :meth:`_run` (one graph, no break), which reads the routing as tensors, so
        a new list of ``adapter_names`` reuses the compiled graph instead of specialising it.
        """
        entered = self._enter_call(adapter_names, args, kwargs)
        try:
            return self._run(args, kwargs)
        finally:
            self._exit_call(entered)

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self._add_extra_loss(self.base_model(*args, **kwargs))

    def _add_extra_loss(self, output: Any) -> Any:
        loss = getattr(output, "loss", None)
        if not self.training or not isinstance(loss, torch.Tensor):
            return output
        total = loss
        for name in self._active:
            config = self.peft_config[name]
            hook = getattr(get_method(config.peft_type).tuner, "extra_loss", None)
            extra = hook(self.base_model, config, name) if hook is not None else None
            if extra is not None:
                total = total + extra
        if total is not loss:
            output.loss = total
        return output

    # --- training hooks ------------------------------------------------------------------------
    def on_step_end(self, global_step: int) -> None:
        """Run the active adapters' per-step work (AdaLoRA's rank allocation; a no-op for LoRA).

        Call it in your own loop after ``optimizer.step()`` and before ``optimizer.zero_grad()``:
        the hooks read the gradients. ``global_step`` counts optimizer steps from 0.
        """
        for name in self._active:
            config = self.peft_config[name]
            hook = getattr(get_method(config.peft_type).tuner, "on_step_end", None)
            if hook is not None:
                hook(self.base_model, config, name, global_step)

    def update_and_allocate(self, global_step: int) -> None:
        """PEFT's name for :meth:`on_step_end`."""
        self.on_step_end(global_step)

    def generate(self, *args: Any, adapter_names: Sequence[str] | None = None, **kwargs: Any) -> Any:
        """The wrapped model's ``generate``; ``adapter_names`` picks an adapter per prompt."""
        expand = int(kwargs.get("num_beams") or 1) * int(kwargs.get("num_return_sequences") or 1)
        entered = self._enter_call(adapter_names, args, kwargs, expand)
        try:
            return self.base_model.generate(*args, **kwargs)
        finally:
            self._exit_call(entered)

    # --- merging -----------------------------------------------------------------------------
    def _merged_names(self) -> list[str]:
        seen: dict[str, None] = {}
        for m in self._adapter_modules():
            if isinstance(m, AdapterLayer):
                for n in m.merged:
                    seen.setdefault(n, None)
        return list(seen)

    def merge_adapter(self, adapter_names: Sequence[str] | None = None, safe_merge: bool = False) -> None:
        """Add the adapters' ΔW into the base weights (default: the active ones).

        With ``safe_merge=True`` a result holding NaN/Inf raises :class:`MergeError` and every
        layer merged so far in this call is restored.
        """
        names = list(adapter_names) if adapter_names is not None else list(self._active)
        self._check_names(names)
        for name in names:
            refusal = merge_refusal(self.peft_config[name])
            if refusal:
                raise MergeError(f"cannot merge adapter {name!r}: {refusal}")
        done: list[tuple[AdapterLayer, list[str]]] = []
        try:
            for _, m in self._modules_with_adapters():
                if isinstance(m, AdapterLayer):
                    done.append((m, m.merge(names, safe=safe_merge)))
        except MergeError:
            for m, merged in done:
                m.unmerge(merged)
            raise

    def unmerge_adapter(self) -> None:
        """Subtract every merged ΔW again; weights return to the original within round-off."""
        for _, m in self._modules_with_adapters():
            if isinstance(m, AdapterLayer):
                m.unmerge()

    def _unwrap_all(
        self, merge: bool, safe_merge: bool = False, adapter_names: Sequence[str] | None = None
    ) -> nn.Module:
        if merge:
            self.merge_adapter(adapter_names, safe_merge=safe_merge)
        for path, module in list(self._modules_with_adapters()):
            replace_module(self.base_model, path, module.unwrap(merge=merge))
        self._structure_changed()
        self.peft_config.clear()
        self._active = []
        return self.base_model

    def merge_and_unload(self, safe_merge: bool = False, adapter_names: Sequence[str] | None = None) -> nn.Module:
        """Merge the active adapters and return the plain base model (no adapter layers left)."""
        return self._unwrap_all(True, safe_merge, adapter_names)

    def unload(self) -> nn.Module:
        """Remove every adapter without merging and return the original base model."""
        return self._unwrap_all(False)

    def add_weighted_adapter(
        self,
        adapters: Sequence[str],
        weights: Sequence[float],
        adapter_name: str,
        combination_type: str = "svd",
        svd_rank: int | None = None,
        svd_clamp: float | None = None,
        svd_full_matrices: bool = True,
        svd_driver: str | None = None,
        density: float | None = None,
        majority_sign_method: str = "total",
        generator: torch.Generator | None = None,
    ) -> None:
        """Add ``adapter_name``, a combination of existing LoRA ``adapters`` (PEFT's signature and results).

        The math lives in :func:`sdk.merging.combine.combine_lora_adapters`; see it for the combination
        types. The new adapter is added but not activated. Unlike PEFT, an existing name is an error.
        As in PEFT, the adapter is allocated first and each module's result is copied straight into
        it (no second full copy); on any failure it is deleted again, leaving the model unchanged.
        """
        from .merging.combine import iter_combined_tensors, plan_lora_combination
        from .merging.options import CombineOptions

        names = list(adapters)
        self._check_names(names)
        if adapter_name in self.peft_config:
            raise AdapterNameError(f"adapter {adapter_name!r} already exists; pick another name or delete it first")
        configs = [self.peft_config[n] for n in names]
        states = [
            {k: t.detach() for k, t in adapter_state_dict(self.base_model, n, c, get_method(c.peft_type).tuner).items()}
            for n, c in zip(names, configs, strict=True)
        ]
        order = [path for path, _ in self.base_model.named_modules()]
        plan = plan_lora_combination(states, configs, CombineOptions(
            weights, combination_type,  # type: ignore[arg-type]
            svd_rank=svd_rank, svd_clamp=svd_clamp, svd_full_matrices=svd_full_matrices, svd_driver=svd_driver,
            density=density, majority_sign_method=majority_sign_method,  # type: ignore[arg-type]
            generator=generator, module_order=order,
        ))
        # the new adapter's random init must not move the global RNG that the dare masks may draw from
        cuda = sorted({p.device.index or 0 for p in self.base_model.parameters() if p.device.type == "cuda"})
        with torch.random.fork_rng(devices=cuda):
            self.add_adapter(adapter_name, plan.config)
        try:
            tuner = get_method(plan.config.peft_type).tuner
            slots = adapter_state_dict(self.base_model, adapter_name, plan.config, tuner)
            filled: set[str] = set()
            with torch.no_grad():
                for key, tensor in iter_combined_tensors(plan):
                    slot = slots.get(key)
                    if slot is None or slot.shape != tensor.shape:
                        raise MergeError(f"combined tensor {key} {tuple(tensor.shape)} has no matching slot in the "
                                         f"new adapter {adapter_name!r}")
                    slot.copy_(tensor)
                    filled.add(key)
                    del tensor  # before the next module is computed
            if len(filled) != len(slots):
                raise MergeError(f"the combination left {sorted(set(slots) - filled)} of {adapter_name!r} unset")
        except BaseException:
            self.delete_adapter(adapter_name)
            raise

    # --- parameters ----------------------------------------------------------------------------
    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """``(trainable, total)`` parameter counts."""
        trainable = total = 0
        for p in self.parameters():
            total += p.numel()
            if p.requires_grad:
                trainable += p.numel()
        return trainable, total

    def print_trainable_parameters(self) -> None:
        """Print trainable/total counts and the trainable share."""
        trainable, total = self.get_nb_trainable_parameters()
        share = 100 * trainable / total if total else 0.0
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {share:.4f}")

    # --- save / load -------------------------------------------------------------------------
    def save_pretrained(
        self,
        save_directory: str | Path,
        selected_adapters: Sequence[str] | None = None,
        *,
        state_dict: Mapping[str, torch.Tensor] | None = None,
        is_main_process: bool = True,
        safe_serialization: bool = True,
        save_embedding_layers: str | bool = "auto",
        max_shard_size: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        """Write adapters in PEFT's format: ``default`` in the folder, others in ``<folder>/<name>/``.

        Takes the arguments ``transformers.Trainer``, accelerate and PEFT's callers pass: ``state_dict``
        (this model's full state dict, e.g. gathered from shards: the adapter tensors are taken from it),
        ``is_main_process`` (other processes write nothing), ``safe_serialization`` (always safetensors:
        ``False`` warns, nothing is ever pickled), ``save_embedding_layers`` (``"auto"``/``False``; the base
        model's embeddings are never part of an adapter here, so ``True`` is refused), ``max_shard_size``
        (an adapter is one file), and other keyword arguments PEFT forwards to its model card (ignored).
        A training record (:attr:`provenance`) is saved next to the adapter as ``provenance.json``.
        """
        if save_embedding_layers is True:
            raise ConfigError("save_embedding_layers=True: this SDK's adapters never include the base model's "
                              "embedding layers; save the resized base model itself with its save_pretrained")
        if not safe_serialization:
            warnings.warn("save_pretrained writes safetensors only (never pickle); safe_serialization=False "
                          "is ignored", stacklevel=2)
        del max_shard_size, kwargs
        names = list(selected_adapters) if selected_adapters is not None else self.adapter_names
        self._check_names(names)
        if not is_main_process:
            return
        root = Path(save_directory)
        if root.exists() and not root.is_dir():
            raise FileExistsError(f"{root} exists and is not a directory")
        for name in names:
            config = self.peft_config[name]
            tensors = adapter_state_dict(self.base_model, name, config, get_method(config.peft_type).tuner)
            if state_dict is not None:
                tensors = self._from_state_dict(tensors, state_dict)
            out = config.copy(inference_mode=True)
            out.extra = dict(config.extra)
            folder = save_adapter(root if name == "default" else root / name, out, tensors)
            record = self.provenance.get(name)
            if record:
                write_provenance(folder, record)

    def _from_state_dict(self, tensors: dict[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor]
                         ) -> dict[str, torch.Tensor]:
        """The adapter's tensors with the values ``state_dict`` (keys of ``self.state_dict()``) holds for them."""
        names = {id(t): n for n, t in self.named_parameters(remove_duplicate=False)}
        names.update({id(t): n for n, t in self.named_buffers(remove_duplicate=False)})
        out = {}
        for key, tensor in tensors.items():
            full = names.get(id(tensor))
            given = state_dict.get(full) if full is not None else None
            out[key] = given if isinstance(given, torch.Tensor) and given.shape == tensor.shape else tensor
        return out

    @property
    def provenance(self) -> dict[str, dict[str, Any]]:
        """Per adapter, what training recorded: ``{"metrics", "params", "dataset"}`` (``sdk.train`` and the
        ``transformers.Trainer`` integration fill it; ``sdk.push`` sends it with the version)."""
        record = self.__dict__.get("_provenance")
        if record is None:
            record = self.__dict__["_provenance"] = {}
        return record

    @classmethod
    def from_pretrained(
        cls,
        model: nn.Module,
        model_id: str | Path,
        adapter_name: str = "default",
        is_trainable: bool = False,
        subfolder: str | None = None,
        *,
        revision: str | None = None,
        token: str | bool | None = None,
        endpoint: str | None = None,
        **kwargs: Any,
    ) -> AdapterModel:
        """Wrap ``model`` and load the adapter ``model_id``: a local folder, a registry reference
        (``"ns/name@prod"``, ``"ns/name@3"``, ``"ns/name@<commit>"``) or a Hugging Face Hub repo id
        (``revision``, ``token``, ``endpoint`` as in ``huggingface_hub``); see :mod:`sdk.hub_loading`."""
        folder = resolve_adapter_source(model_id, subfolder=subfolder, revision=revision, token=token,
                                        endpoint=endpoint, **kwargs)
        config, tensors = _read(folder, is_trainable)
        self = cls(model)
        self._load(adapter_name, config, tensors)
        self.set_adapter(adapter_name)
        if not is_trainable:
            self.eval()
        return self

    def load_adapter(
        self,
        model_id: str | Path,
        adapter_name: str,
        is_trainable: bool = False,
        subfolder: str | None = None,
        *,
        revision: str | None = None,
        token: str | bool | None = None,
        endpoint: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Load another saved adapter next to the existing ones (not activated), from the same sources as
        :meth:`from_pretrained`. Loading into an existing adapter name replaces its weights in place (what
        ``transformers.Trainer`` does to resume and to load the best checkpoint); its config must agree."""
        folder = resolve_adapter_source(model_id, subfolder=subfolder, revision=revision, token=token,
                                        endpoint=endpoint, **kwargs)
        config, tensors = _read(folder, is_trainable)
        if adapter_name in self.peft_config:
            self._reload(adapter_name, config, tensors, is_trainable)
        else:
            self._load(adapter_name, config, tensors)

    def _reload(self, adapter_name: str, config: AdapterConfig, tensors: dict[str, torch.Tensor],
                is_trainable: bool) -> None:
        """New weights for an existing adapter whose config is the same (apart from ``inference_mode``)."""
        current = self.peft_config[adapter_name]
        mine = current.copy(inference_mode=config.inference_mode).to_dict()
        theirs = config.to_dict()
        differ = sorted(k for k in set(mine) | set(theirs)
                        if k not in _IGNORED_ON_RELOAD and mine.get(k) != theirs.get(k))
        if differ:
            raise AdapterStateError(f"adapter {adapter_name!r} exists with another config ({', '.join(differ)} "
                                    "differ); delete it first or load under another name")
        if self._merged_names():
            raise AdapterStateError("cannot reload an adapter while adapters are merged; call unmerge_adapter() first")
        load_adapter_state(self.base_model, adapter_name, current, get_method(current.peft_type).tuner, tensors)
        if is_trainable:
            current.inference_mode = False
        self._update_trainable()

    def push(self, name: str, base_model: str | None = None, **kwargs: Any) -> Any:
        """Push this model's adapter (``adapter_name="default"``) to the registry as a new version of
        ``name``; the same as ``sdk.push(model, name, base_model, **kwargs)``."""
        from .client.api import Client

        client = kwargs.pop("client", None)
        if client is not None:
            return client.push(self, name, base_model, **kwargs)
        with Client() as own:
            return own.push(self, name, base_model, **kwargs)

    # --- transformers.Trainer --------------------------------------------------------------------
    @property  # type: ignore[misc]
    def __class__(self) -> type:
        """What ``isinstance`` sees: to transformers' code once ``peft`` is imported, a subclass of
        ``peft.PeftModel`` too, so that ``transformers.Trainer`` takes its PEFT path (adapter-only checkpoints,
        resume, best model); to everyone else this class. See :mod:`sdk.integrations.peft_view`."""
        return peft_view(type(self), sys._getframe(1).f_globals.get("__name__", ""))

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        """Pickle (``copy``, ``torch.save``) by the real class, not the view ``__class__`` reports."""
        func, args, *rest = super().__reduce_ex__(protocol)  # type: ignore[misc]
        if func is copyreg.__newobj__:
            func = _new_instance
        return (func, args, *rest)

    def _load(self, adapter_name: str, config: AdapterConfig, tensors: dict[str, torch.Tensor]) -> None:
        self.add_adapter(adapter_name, config)
        try:
            load_adapter_state(self.base_model, adapter_name, config, get_method(config.peft_type).tuner, tensors)
        except Exception:
            self.delete_adapter(adapter_name)
            raise


#: Config keys that may differ between a saved checkpoint and the adapter it reloads into.
_IGNORED_ON_RELOAD = frozenset({"inference_mode", "base_model_name_or_path", "revision", "peft_version"})


def _skip_own_frame(fn: Callable[..., Any]) -> None:
    """Tell Dynamo once, on ``fn``'s code, to run ``fn``'s own frame as it is and compile what it calls.

    ``torch.compiler.disable(recursive=False)`` alone says the same, but Dynamo then examines the frame anew on
    every call of a compiled model (trace rules, bytecode scans: about 0.3 ms a call on CPU, 3-6% of a small
    model's compiled forward). Marking the code makes that a lookup. Without the hook (another torch) the
    decorator still gives the same graphs, only slower.
    """
    skip_code = getattr(torch._dynamo.eval_frame, "skip_code", None)
    if skip_code is not None:
        skip_code(getattr(fn, "_torchdynamo_orig_callable", fn).__code__)


_skip_own_frame(AdapterModel.forward)


def _new_instance(cls: type, *args: Any) -> Any:
    """``copyreg.__newobj__`` under another name (pickle checks that one against ``obj.__class__``)."""
    return cls.__new__(cls, *args)


def _read(folder: Path, is_trainable: bool) -> tuple[AdapterConfig, dict[str, torch.Tensor]]:
    data = read_config(folder)
    config = config_from_dict(data)
    config.inference_mode = not is_trainable
    return config, read_adapter_weights(folder)


class _Entered(NamedTuple):
    """What :meth:`AdapterModel._enter_call` set up for one call."""

    routing: Routing | None
    token: bool
    exclusive: bool
    inputs: dict[str, Any] | None


def _name_or_path(model: nn.Module) -> str | None:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "name_or_path", None) or getattr(cfg, "_name_or_path", None) or None


def _batch_and_device(args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[int | None, torch.device | None]:
    """The batch size and device of a call's main input (None where there is no tensor to tell)."""
    first = args[0] if args else next(
        (kwargs[k] for k in ("input_ids", "inputs_embeds", "pixel_values", "x", "input") if k in kwargs), None
    )
    if isinstance(first, torch.Tensor) and first.dim() > 0:
        return first.shape[0], first.device
    return None, None


def get_peft_model(model: nn.Module, config: AdapterConfig, adapter_name: str = "default") -> AdapterModel:
    """Wrap ``model`` with a new adapter (active and trainable unless ``config.inference_mode``)."""
    return AdapterModel(model, config, adapter_name)
