"""LEAF's Shakespeare model (Caldas et al. 2018, arXiv 1812.01097): an 8-dimensional
character embedding, a 2-layer LSTM of 256 units, and a linear layer from the last step's
output to the next character's logits."""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from fedprune.registry import Params
from fedprune.tasks.models.base import MODELS


class CharLSTMParams(Params):
    embedding_dim: Annotated[int, Field(ge=1)] = 8
    hidden: Annotated[int, Field(ge=1)] = 256
    layers: Annotated[int, Field(ge=1)] = 2


class CharLSTM(nn.Module):
    """Input: (N, seq_len) character ids held as floats (every engine builds float example
    inputs; ids are exact in float32); output: (N, vocabulary) logits of the next one."""

    def __init__(self, vocabulary: int, params: CharLSTMParams):
        super().__init__()
        self.embed = nn.Embedding(vocabulary, params.embedding_dim)
        self.lstm = nn.LSTM(
            params.embedding_dim, params.hidden, num_layers=params.layers, batch_first=True
        )
        self.out = nn.Linear(params.hidden, vocabulary)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.lstm(self.embed(x.long()))
        return self.out(outputs[:, -1])


@MODELS.register("char_lstm", CharLSTMParams)
def char_lstm(input_shape: tuple[int, ...], num_classes: int, params: CharLSTMParams) -> nn.Module:
    """`num_classes` is the vocabulary: the embedding's rows and the output's logits."""
    return CharLSTM(num_classes, params)
