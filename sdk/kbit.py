"""Getting a bitsandbytes-quantized model ready for adapter training (QLoRA).

``prepare_model_for_kbit_training`` does what PEFT's function of the same name does, so
training recipes carry over: freeze everything, keep the unquantized parameters (norms,
embeddings, heads) in float32, make the input embeddings' output require grad when
reentrant checkpointing needs it, and turn gradient checkpointing on.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .quantization import is_quantized_param, keep_trainable_layout_everywhere

_HALF = (torch.float16, torch.bfloat16)


def prepare_model_for_kbit_training(
    model: nn.Module,
    use_gradient_checkpointing: bool = True,
    gradient_checkpointing_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """Prepare ``model`` (changed in place, and returned) for training adapters on a quantized base.

    - every parameter is frozen;
    - float16/bfloat16 parameters that are not quantized weights are cast to float32, so norms
      and heads do not lose precision in training;
    - the CPU repacking of 4-bit weights, which would stop gradients, is turned off;
    - with ``use_gradient_checkpointing``, checkpointing is enabled with
      ``gradient_checkpointing_kwargs`` (passed to ``torch.utils.checkpoint``). Reentrant
      checkpointing (``use_reentrant`` unset or True, torch's historical default) needs an input
      that requires grad, so the input embeddings' output is made to require it; with
      ``use_reentrant=False`` that is not needed and not done.
    """
    for param in model.parameters():
        param.requires_grad_(False)
    for param in model.parameters():
        if param.dtype in _HALF and not is_quantized_param(param):
            param.data = param.data.to(torch.float32)
    keep_trainable_layout_everywhere(model)
    if not use_gradient_checkpointing:
        return model
    kwargs = dict(gradient_checkpointing_kwargs or {})
    kwargs.setdefault("use_reentrant", True)  # explicit, so torch does not warn about the default
    enable = getattr(model, "activation_checkpointing_enable", None)
    if callable(enable):
        enable(activation_checkpointing_kwargs=kwargs)
    elif callable(getattr(model, "gradient_checkpointing_enable", None)):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        raise TypeError(
            f"{type(model).__name__} has no gradient_checkpointing_enable(); pass use_gradient_checkpointing=False "
            "(gradient checkpointing is enabled through transformers' PreTrainedModel API)"
        )
    if kwargs["use_reentrant"]:
        _enable_input_require_grads(model)
    return model


def _enable_input_require_grads(model: nn.Module) -> None:
    """Make the input embeddings' output require grad (reentrant checkpoints see no grad otherwise)."""
    if getattr(model, "_require_grads_hooks", None):  # transformers' checkpointing set the hook already
        return
    hook = getattr(model, "enable_input_require_grads", None)
    if callable(hook):
        hook()
        return
    get = getattr(model, "get_input_embeddings", None)
    embeddings = get() if callable(get) else None
    if embeddings is None:
        raise TypeError(
            f"{type(model).__name__} has no input embeddings to attach the require-grad hook to; "
            "pass gradient_checkpointing_kwargs={'use_reentrant': False}"
        )

    def require_grad(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        output.requires_grad_(True)

    embeddings.register_forward_hook(require_grad)
