"""Glue to other training libraries. Each submodule imports its library only when imported itself:

- :mod:`sdk.integrations.transformers` — ``AdapterTrainerCallback`` for ``transformers.Trainer``.
"""
