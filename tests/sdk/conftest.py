"""Fixtures for the SDK tests; the builders live in ``sdk_builders`` (import them from there)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from sdk_builders import build_model, model_inputs
from torch import nn


@pytest.fixture
def make_model() -> Callable[..., nn.Module]:
    """Factory fixture: ``make_model(kind, seed=0)``."""
    return build_model


@pytest.fixture
def make_inputs() -> Callable[..., dict[str, torch.Tensor]]:
    """Factory fixture: ``make_inputs(kind, batch=5, seed=123)``."""
    return model_inputs
