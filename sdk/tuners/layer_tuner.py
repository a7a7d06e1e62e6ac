"""Shared :class:`~sdk.methods.Tuner` mechanics for methods that wrap single layers (LoRA, AdaLoRA,
IA3, LoHa, LoKr).

A method says which layer kinds it supports, which tensors (and shapes) an adapter has on one
module, and how to add an adapter to its layer; selection, injection (all or nothing),
``modules_to_save`` and the expected on-disk shapes for a base-model signature are done here
once, the same way for the live model and for a registered signature.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor, nn

from ..errors import TargetingError, TargetModulesNotFoundError, UnsupportedLayerError
from ..formats import PREFIX
from ..layers import AdapterModule, model_view, replace_module
from ..modules_to_save import add_modules_to_save
from ..signature import ExpectedTensor, module_entry
from ..targeting import SEQ_CLS_HEADS, ModelView, is_target, matches_name_list, not_found_message
from ..targeting import resolve_target_modules as _resolve

if TYPE_CHECKING:
    from ..signature import ModuleEntry, Signature

#: What :meth:`LayerTuner.inject` does per selected module: its path, the module, and the layer class
#: that will wrap it (None: it is a layer of the method already and gets one more adapter).
Plan = list[tuple[str, nn.Module, type[AdapterModule] | None]]


class LayerTuner:
    """Base of layer-wrapping tuners; subclasses fill in the per-method hooks below."""

    #: The method's name in messages (``"IA3"``, ``"LoRA"``).
    method: ClassVar[str] = ""
    #: The adapter layer class the method injects, or the base of its classes when :meth:`layer_for`
    #: picks one per module.
    layer_cls: ClassVar[type[AdapterModule]]
    #: Targets per ``model_type`` when a config leaves ``target_modules`` unset.
    default_targets: ClassVar[dict[str, list[str]]] = {}
    #: What "the … config does not fit the base model" calls the config.
    config_label: ClassVar[str] = "adapter"
    #: On-disk keys are ``base_model.model.<module path>.<tensor name>``.
    disk_prefix: ClassVar[str] = PREFIX
    #: How the tensor names the method adds inside a module begin (``"ia3_"``); see :class:`~sdk.methods.Tuner`.
    factor_prefixes: ClassVar[tuple[str, ...]] = ()

    # --- hooks ---------------------------------------------------------------------------
    def unsupported(self, entry: ModuleEntry) -> str | None:
        """Why the module cannot carry this method, or None when it can."""
        raise NotImplementedError

    def tensor_shapes(
        self, config: Any, path: str, entry: ModuleEntry, view: ModelView
    ) -> dict[str, ExpectedTensor]:
        """On-disk suffix -> expected tensor of one adapted module (raise ValueError if it cannot fit)."""
        raise NotImplementedError

    def add_to_layer(self, layer: Any, adapter_name: str, config: Any, path: str, view: ModelView) -> None:
        """Create adapter ``adapter_name`` in ``layer`` (the module at ``path``)."""
        raise NotImplementedError

    def zero_at_init(self, key: str) -> bool:
        """Whether on-disk tensor ``key`` starts as zeros."""
        raise NotImplementedError

    # --- hooks with a default ----------------------------------------------------------------
    def kind_unsupported(self, kind: str) -> str:
        """Why a selected module of ``kind`` that holds no parameters of its own cannot carry the method."""
        return f"layers of type {kind} are not supported"

    def layer_for(self, module: nn.Module, path: str, config: Any, view: ModelView) -> type[AdapterModule] | str:
        """The layer class that wraps ``module`` (no adapter layer yet) for ``config``, or why none can."""
        entry = module_entry(path, module)
        reason = self.unsupported(entry)
        if reason is None:
            try:
                self.tensor_shapes(config, path, entry, view)
            except ValueError as exc:
                reason = str(exc)
        return self.layer_cls if reason is None else reason

    def fit_problem(
        self, module: nn.Module, layer_cls: type[AdapterModule], path: str, config: Any, view: ModelView
    ) -> str | None:
        """Why the adapter does not fit ``module`` (a ``layer_cls`` already, or to be wrapped in one); None: it fits."""
        return None

    def prepare(self, plan: Plan, config: Any, view: ModelView) -> None:
        """Settle config fields that follow from the modules about to be adapted (before any changes)."""

    def expect_outside_layers(
        self, out: dict[str, ExpectedTensor], view: ModelView, config: Any, signature: Signature, keys: list[str]
    ) -> None:
        """Add to ``out`` the tensors the adapter saves outside its layers: full ``modules_to_save`` copies."""
        modules = signature.by_path()
        names = self.modules_to_save(view, config)
        for path in (p for p in view.kinds if names and matches_name_list(p, names)):
            for name, shape in modules[path].params.items() if path in modules else ():
                out[f"{path}.{name}"] = ExpectedTensor(shape, tuple(f"dim{i}" for i in range(len(shape))))

    # --- selection ---------------------------------------------------------------------------
    def targets(self, view: ModelView, config: Any) -> str | list[str]:
        """Concrete target names: the config's, or the method's default for this architecture."""
        if config.target_modules is None:
            if view.model_type in self.default_targets:
                return list(self.default_targets[view.model_type])
            raise TargetModulesNotFoundError(
                f"target_modules is not set and {self.method} has no default for model_type={view.model_type!r}; "
                "pass target_modules=[...] (module names such as 'v_proj'), a full-match regex, or 'all-linear'"
            )
        return _resolve(view, config.target_modules, task_type=config.task_type)

    def modules_to_save(self, view: ModelView, config: Any) -> list[str]:
        """``modules_to_save`` plus the classification head that the task trains in full."""
        names = list(config.modules_to_save or [])
        if config.task_type in ("SEQ_CLS", "TOKEN_CLS"):
            present = {p.rsplit(".", 1)[-1] for p in view.kinds}
            names += [h for h in SEQ_CLS_HEADS if h in present and h not in names]
        return names

    def select(self, view: ModelView, config: Any) -> list[str]:
        """Paths of the modules ``config`` targets (errors if none)."""
        targets = self.targets(view, config)
        mts = self.modules_to_save(view, config)
        layers = getattr(config, "layers_to_transform", None)
        keys = [
            path
            for path in view.kinds
            if is_target(
                path,
                targets,
                exclude_modules=config.exclude_modules,
                layers_to_transform=layers,
                layers_pattern=getattr(config, "layers_pattern", None),
                modules_to_save=mts,
            )
        ]
        if not keys:
            extra = f" within layers {layers}" if layers is not None else ""
            if config.exclude_modules:
                extra += f" after excluding {config.exclude_modules}"
            raise TargetModulesNotFoundError(not_found_message(view, targets, extra))
        return keys

    # --- the Tuner protocol --------------------------------------------------------------------
    def inject(self, model: nn.Module, config: Any, adapter_name: str) -> list[str]:
        """Add adapter ``adapter_name`` to every targeted module; nothing changes if any check fails."""
        view = model_view(model)
        keys = self.select(view, config)
        plan = self._plan(model, config, view, keys)
        self.prepare(plan, config, view)
        for path, module, layer_cls in plan:
            layer = module if layer_cls is None else layer_cls(module)
            self.add_to_layer(layer, adapter_name, config, path, view)
            if layer_cls is not None:
                replace_module(model, path, layer)
        mts = self.modules_to_save(view, config)
        if mts:
            add_modules_to_save(model, mts, adapter_name)
        return keys

    def _plan(self, model: nn.Module, config: Any, view: ModelView, keys: list[str]) -> Plan:
        """What to do at each selected module; raises with every module that cannot take the adapter."""
        plan: Plan = []
        problems: list[str] = []
        for path in keys:
            module = model.get_submodule(path)
            layer_cls: type[AdapterModule] | None = None
            if isinstance(module, self.layer_cls):
                reason = self.fit_problem(module, type(module), path, config, view)
            elif isinstance(module, AdapterModule):
                reason = f"already wrapped by {type(module).__name__}; cannot add {self.method} to it"
            else:
                made = self.layer_for(module, path, config, view)
                layer_cls = None if isinstance(made, str) else made
                reason = made if isinstance(made, str) else self.fit_problem(module, made, path, config, view)
            if reason is not None:
                problems.append(f"{path}: {reason}")
                continue
            plan.append((path, module, layer_cls))
        if problems:
            cls = UnsupportedLayerError if all("not supported" in p for p in problems) else TargetingError
            raise cls(f"cannot add {self.method} adapter:\n  " + "\n  ".join(problems))
        return plan

    def expected_shapes(self, config: Any, signature: Signature) -> dict[str, ExpectedTensor]:
        """On-disk keys (without ``base_model.model.``) and shapes of this adapter on ``signature``."""
        view = signature.view()
        modules = signature.by_path()
        out: dict[str, ExpectedTensor] = {}
        problems: list[str] = []
        keys = self.select(view, config)
        for path in keys:
            entry = modules.get(path)
            if entry is None:  # a parameterless container matched a regex
                problems.append(f"{path}: {self.kind_unsupported(view.kinds[path])}")
                continue
            reason = self.unsupported(entry)
            if reason is None:
                try:
                    out.update({f"{path}.{k}": v for k, v in self.tensor_shapes(config, path, entry, view).items()})
                except ValueError as exc:
                    reason = str(exc)
            if reason is not None:
                problems.append(f"{path}: {reason}")
        if problems:
            raise TargetingError(
                f"the {self.config_label} config does not fit the base model:\n  " + "\n  ".join(problems)
            )
        self.expect_outside_layers(out, view, config, signature, keys)
        return out

    def summary_fields(self, config: Any) -> dict[str, Any]:
        """The rank and ``rank_pattern``, where the method's config has them."""
        fields = config.to_dict()
        return {"r": fields.get("r"), "rank_pattern": fields.get("rank_pattern")}

    def extra_state(self, model: nn.Module, config: Any, adapter_name: str) -> dict[str, Tensor]:
        """These methods own nothing outside their layers."""
        return {}

    def mark_trainable(self, model: nn.Module, config: Any, adapter_name: str) -> None:
        """These methods train no base parameters."""
