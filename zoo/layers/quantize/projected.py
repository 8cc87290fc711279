"""Projected VQ with l2-normalised lookup, and its residual stack: what MOSS-Audio-Tokenizer calls "LFQ".

MOSS-Audio-Tokenizer's `ResidualLFQ` is not lookup-free: each of its 32 quantizers projects the
residual (512 channels) to an 8-dim code space, finds the nearest of 1024 learned codes after
l2-normalising both sides (Euclidean formula on the normalised vectors), looks up the RAW code and
projects it back. Upstream projections are weight-normalised 1x1 convs; here they are `nn.Linear`
(channels-last), so a converter folds weight_norm (w = g * v / |v|) and squeezes the kernel axis.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from registry.errors import ConfigError
from zoo.layers.quantize.base import Quantizer, QuantizerOutput, check_ids, check_latents
from zoo.layers.quantize.residual import residual_forward
from zoo.layers.quantize.usage import CodebookUsage
from zoo.layers.quantize.vq import VectorQuantizer


def _linear_or_identity(dim_in: int, dim_out: int) -> nn.Module:
    return nn.Linear(dim_in, dim_out) if dim_in != dim_out else nn.Identity()


class ProjectedVQ(Quantizer):
    """in_proj (dim -> code_dim), normalised nearest-code search, raw code lookup, out_proj back to dim.

    ids are int64 (...) for latents (..., dim); `decode` returns out_proj(codebook[ids]) (..., dim).
    Training: straight-through from the projected latents, codebook and commitment losses (DAC-style).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        code_dim: int,
        commitment_weight: float = 0.25,
        codebook_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.dim = int(dim)
        self.codebook_size = int(codebook_size)
        self.code_dim = int(code_dim)
        self.commitment_weight = commitment_weight
        self.codebook_weight = codebook_weight
        self.in_proj = _linear_or_identity(dim, code_dim)
        self.out_proj = _linear_or_identity(code_dim, dim)
        self.vq = VectorQuantizer(codebook_size, code_dim, normalize_codes=True, normalized_decode=False)
        nn.init.normal_(self.vq.codebook)

    @property
    def codebook(self) -> Tensor:
        return self.vq.codebook

    def _ids(self, z: Tensor) -> tuple[Tensor, Tensor]:
        z_e = self.in_proj(z.float())
        return z_e, self.vq.search(self.vq.search_input(z_e))

    def encode(self, z: Tensor) -> Tensor:
        """Latents (..., dim) -> int64 ids (...)."""
        check_latents(z, self.dim)
        return self._ids(z)[1]

    def decode(self, ids: Tensor) -> Tensor:
        """Integer ids (...) -> projected code vectors (..., dim)."""
        check_ids(ids, self.codebook_size)
        return self.lookup(ids)

    def lookup(self, ids: Tensor) -> Tensor:
        return self.out_proj(self.vq.lookup(ids))

    def forward(self, z: Tensor) -> QuantizerOutput:
        check_latents(z, self.dim)
        z_e, ids = self._ids(z)
        q = self.vq.lookup(ids)
        losses: dict[str, Tensor] = {}
        if self.training:
            if self.commitment_weight > 0:
                losses["commitment"] = self.commitment_weight * F.mse_loss(z_e, q.detach())
            if self.codebook_weight > 0:
                losses["codebook"] = self.codebook_weight * F.mse_loss(q, z_e.detach())
            q = z_e + (q - z_e).detach()
        usage = CodebookUsage.from_ids(ids, self.codebook_size) if ids.numel() else None
        return QuantizerOutput(quantized=self.out_proj(q), ids=ids, losses=losses, usage=usage)


class ResidualLFQ(Quantizer):
    """MOSS-Audio-Tokenizer's residual stack of `ProjectedVQ`s (its "rlfq": 32 x 1024 codes, code dim 8).

    Optional `input_dim`/`output_dim` add the stack's outer projections (upstream `input_proj`,
    `output_proj`, e.g. 768 <-> 512). ids are int64 (..., n_q), codebook axis last; `encode(z,
    num_quantizers=n)` keeps the first n and `decode` sums the first `ids.shape[-1]` quantizers, then
    applies the output projection. `dim` is the input latent width (`input_dim` if given).
    """

    def __init__(
        self,
        num_quantizers: int = 32,
        codebook_size: int = 1024,
        dim: int = 512,
        code_dim: int = 8,
        input_dim: int | None = None,
        output_dim: int | None = None,
    ) -> None:
        super().__init__()
        if num_quantizers < 1:
            raise ConfigError(f"num_quantizers must be >= 1; got {num_quantizers}.")
        self.num_quantizers = int(num_quantizers)
        self.codebook_size = int(codebook_size)
        self.rvq_dim = int(dim)
        self.dim = int(input_dim or dim)
        self.output_dim = int(output_dim or self.dim)
        self.input_proj = _linear_or_identity(self.dim, self.rvq_dim)
        self.output_proj = _linear_or_identity(self.rvq_dim, self.output_dim)
        self.layers = nn.ModuleList(ProjectedVQ(dim, codebook_size, code_dim) for _ in range(num_quantizers))

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return (self.codebook_size,) * self.num_quantizers

    def _depth(self, num_quantizers: int | None) -> int:
        n = self.num_quantizers if num_quantizers is None else int(num_quantizers)
        if not 1 <= n <= self.num_quantizers:
            raise ConfigError(f"num_quantizers must lie in [1, {self.num_quantizers}]; got {num_quantizers}.")
        return n

    def encode(self, z: Tensor, num_quantizers: int | None = None, mask: Tensor | None = None) -> Tensor:
        """Latents (..., dim) -> int64 ids (..., n_q).

        `mask` (...) bool marks valid positions; elsewhere every quantizer searches a zero residual and
        the residual is never updated, as MOSS-Audio-Tokenizer treats frames past a clip's length.
        """
        check_latents(z, self.dim)
        residual = self.input_proj(z.float())
        keep = None if mask is None else mask.unsqueeze(-1).to(residual.dtype)
        ids = []
        for layer in self.layers[: self._depth(num_quantizers)]:
            searched = residual if keep is None else residual * keep
            layer_ids = layer._ids(searched)[1]
            step = layer.lookup(layer_ids)
            residual = residual - (step if keep is None else step * keep)
            ids.append(layer_ids)
        return torch.stack(ids, dim=-1)

    def decode(self, ids: Tensor) -> Tensor:
        """Integer ids (..., n) with n <= num_quantizers -> (..., output_dim)."""
        check_ids(ids, self.codebook_sizes, codebook_axis=True)
        out = self.layers[0].lookup(ids[..., 0])
        for i in range(1, ids.shape[-1]):
            out = out + self.layers[i].lookup(ids[..., i])
        return self.output_proj(out)

    def forward(self, z: Tensor, num_quantizers: int | None = None) -> QuantizerOutput:
        check_latents(z, self.dim)
        layers = self.layers[: self._depth(num_quantizers)]
        out = residual_forward(layers, self.input_proj(z.float()), self.codebook_size)
        out.quantized = self.output_proj(out.quantized)
        return out
