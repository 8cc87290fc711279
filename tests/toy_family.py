"""A small image tokenizer used by the foundation tests (registry, Hub I/O, CLI) only.

It is a real tokenizer (a strided conv encoder, the shared VQ, a transposed-conv decoder), so the
tests exercise the same paths as the families, at a size that runs in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from registry import register_tokenizer
from zoo.layers.quantize.vq import VectorQuantizer
from zoo.spec import TokenSpec
from zoo.tokenizer import Tokenizer, check_ids
from zoo.tokens import Tokens


@dataclass
class ToyConfig:
    channels: int = 16
    codebook_size: int = 64
    stride: int = 4


class ToyTokenizer(Tokenizer):
    family = "toyvq"
    config_class = ToyConfig

    def __init__(self, config: ToyConfig) -> None:
        super().__init__(config)
        c, s = config.channels, config.stride
        self.encoder = nn.Conv2d(3, c, kernel_size=s, stride=s)
        self.quantizer = VectorQuantizer(config.codebook_size, c)
        self.decoder = nn.ConvTranspose2d(c, 3, kernel_size=s, stride=s)

    @property
    def spec(self) -> TokenSpec:
        s = self.config.stride
        return TokenSpec(modality="image", codebook_sizes=(self.config.codebook_size,), downsample=(s, s))

    def encode_ids(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantizer.encode(self.encoder(x).movedim(1, -1))

    def decode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.quantizer.decode(ids).movedim(-1, 1)).clamp(-1, 1)

    def encode(self, x: Any, **kwargs: Any) -> Tokens:
        x = self.prepare(x)
        ids = self.encode_ids(x)
        size = torch.tensor([list(x.shape[-2:])] * x.shape[0])
        return self.make_tokens(ids, grid=tuple(ids.shape[1:]), original_size=size)

    def decode(self, tokens: Tokens | torch.Tensor, **kwargs: Any) -> torch.Tensor:
        ids = tokens.ids if isinstance(tokens, Tokens) else tokens
        return self.decode_ids(check_ids(ids, self.config.codebook_size))

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.quantizer.decode(check_ids(ids, self.config.codebook_size))


register_tokenizer(ToyTokenizer)
