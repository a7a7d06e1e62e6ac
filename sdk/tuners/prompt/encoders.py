"""The modules that produce a prompt adapter's table of virtual-token vectors.

Every method keeps a learned embedding of its virtual tokens; prefix tuning with
``prefix_projection`` and P-tuning pass it through a small network (the "head"). The table the
model consumes — and the only thing saved, as ``prompt_embeddings`` — is the head's output. A
loaded adapter therefore has no head: :meth:`VirtualTokenEncoder.to_table` turns an encoder into
that saved form.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import PrefixTuningConfig, PromptEncoderConfig, PromptLearningConfig


class LstmHead(nn.Module):
    """P-tuning's LSTM head: a bidirectional LSTM, then a two-layer MLP back to ``token_dim``."""

    def __init__(self, dim: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, hidden, num_layers=layers, dropout=dropout, bidirectional=True, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(self.lstm(x)[0])


class VirtualTokenEncoder(nn.Module):
    """A learned ``rows × in_dim`` embedding, optionally mapped by ``head`` to ``rows × width``."""

    def __init__(self, rows: int, in_dim: int, width: int, head: nn.Module | None = None) -> None:
        super().__init__()
        self.rows = rows
        self.width = width
        self.embedding = nn.Embedding(rows, in_dim)
        self.head = head

    @property
    def has_head(self) -> bool:
        """Whether the table is computed by a network (and so is not itself a parameter)."""
        return self.head is not None

    def table(self) -> Tensor:
        """The ``rows × width`` table of virtual-token vectors."""
        weight = self.embedding.weight
        if self.head is None:
            return weight
        return self.head(weight.unsqueeze(0))[0]

    def saved_table(self) -> Tensor:
        """The table as saved: computed without dropout, detached from the graph."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return self.table().detach()
        finally:
            self.train(was_training)

    def to_table(self) -> None:
        """Replace embedding and head by one trainable table holding their current output."""
        if self.head is None:
            return
        values = self.saved_table().clone()
        self.head = None
        self.embedding = nn.Embedding(self.rows, self.width, device=values.device, dtype=values.dtype)
        with torch.no_grad():
            self.embedding.weight.copy_(values)


def build_encoder(config: PromptLearningConfig) -> VirtualTokenEncoder:
    """The encoder a (fully filled) config asks for; in inference mode only the saved table."""
    rows, width = config.total_virtual_tokens, config.table_width()
    dim = int(config.token_dim or 0)
    hidden = int(getattr(config, "encoder_hidden_size", None) or dim)
    head: nn.Module | None = None
    in_dim = width
    if not config.inference_mode:
        if isinstance(config, PrefixTuningConfig) and config.prefix_projection:
            head = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, width))
            in_dim = dim
        elif isinstance(config, PromptEncoderConfig):
            if config.encoder_reparameterization_type == "LSTM":
                head = LstmHead(dim, hidden, config.encoder_num_layers, float(config.encoder_dropout))
            else:
                head = nn.Sequential(
                    nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, dim)
                )
            in_dim = dim
    encoder = VirtualTokenEncoder(rows, in_dim, width, head)
    if isinstance(config, PrefixTuningConfig) and config.init_weights == "zero":
        with torch.no_grad():
            if head is None:
                encoder.embedding.weight.zero_()
            else:  # the last layer's output is the prefix: zero it
                last = head[-1]
                assert isinstance(last, nn.Linear)
                last.weight.zero_()
                last.bias.zero_()
    return encoder
