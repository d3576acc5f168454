"""A small BERT-style text encoder: token ids and an attention mask in, one pooled embedding out.

Random weights from a fixed seed: it stands for the multi-input, integer-input models
(BERT and friends) users compile, whose outputs are not class scores and are judged
by closeness to the framework's own outputs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

VOCAB_SIZE = 1000
SEQUENCE_LENGTH = 32
HIDDEN = 64
HEADS = 4
LAYERS = 2


class EncoderLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(HIDDEN, 3 * HIDDEN)
        self.proj = nn.Linear(HIDDEN, HIDDEN)
        self.norm1 = nn.LayerNorm(HIDDEN)
        self.ffn = nn.Sequential(nn.Linear(HIDDEN, 4 * HIDDEN), nn.GELU(), nn.Linear(4 * HIDDEN, HIDDEN))
        self.norm2 = nn.LayerNorm(HIDDEN)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).reshape(batch, length, 3, HEADS, HIDDEN // HEADS).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(HIDDEN // HEADS) + mask_bias
        attended = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, length, HIDDEN)
        x = self.norm1(x + self.proj(attended))
        return self.norm2(x + self.ffn(x))


class TextEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.tokens = nn.Embedding(VOCAB_SIZE, HIDDEN)
        self.positions = nn.Parameter(torch.randn(SEQUENCE_LENGTH, HIDDEN) * 0.02)
        self.layers = nn.ModuleList(EncoderLayer() for _ in range(LAYERS))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.to(torch.float32)
        x = self.tokens(input_ids) + self.positions
        mask_bias = ((1.0 - mask) * -1e4)[:, None, None, :]  # padding keys get no attention
        for layer in self.layers:
            x = layer(x, mask_bias)
        # mean over real tokens: the sentence embedding
        return (x * mask[..., None]).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1.0)


def build() -> TextEncoder:
    torch.manual_seed(0)
    return TextEncoder().eval()
