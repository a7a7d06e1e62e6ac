"""Adapter methods, one package per method family (config, layers, tuner), and what several share.

:data:`sdk.methods.BUILTIN_METHODS` lists the packages; each names its config classes in
``CONFIGS`` and its tuner in ``TUNER``.
"""
