"""How an ``AdapterModel`` looks to ``transformers`` code that asks ``isinstance(model, peft.PeftModel)``.

``transformers.Trainer`` decides what a checkpoint holds by the model's class: a ``PreTrainedModel`` or a
``PeftModel`` is saved with its own ``save_pretrained`` (a ``PeftModel``: the adapter only), anything else
as its whole state dict in ``model.safetensors``; resuming and ``load_best_model_at_end`` call
``model.load_adapter(checkpoint, name)`` only for a ``PeftModel``, and only then are input and label names
read from the base model's ``forward``. An ``AdapterModel`` has the same methods (``save_pretrained``,
``load_adapter``, ``active_adapters``, ``get_base_model``), so it takes that path: asked from a module of
``transformers`` (``isinstance`` reads ``obj.__class__``), its ``__class__`` is the view made here, a
subclass of both ``AdapterModel`` and ``peft.PeftModel``.

Everyone else sees the real class: ``type(model)``, attribute lookup, pickling, ``torch.compile`` (dynamo
resolves attributes through ``obj.__class__.__mro__``, where PEFT's properties would shadow ours) and
``peft``'s own functions, which must not take an ``AdapterModel`` for one of theirs. Subclassing
``PeftModel`` for real would put PEFT's properties (``peft_config``, ``active_adapter``…) in front of ours.
Without ``peft`` imported there is no ``PeftModel`` to be an instance of, and the view is the class itself.
"""

from __future__ import annotations

import sys
from functools import cache


def peft_view(cls: type, caller: str) -> type:
    """``cls``, or for a ``caller`` module of transformers once ``peft`` is imported, a subclass of ``cls``
    and ``peft.PeftModel`` named like ``cls``."""
    if caller != "transformers" and not caller.startswith("transformers."):
        return cls
    peft = sys.modules.get("peft")
    base = getattr(peft, "PeftModel", None) if peft is not None else None
    return _view(cls, base) if isinstance(base, type) else cls


@cache
def _view(cls: type, peft_model: type) -> type:
    return type(cls.__name__, (cls, peft_model), {"__module__": cls.__module__, "__qualname__": cls.__qualname__})


__all__ = ["peft_view"]
