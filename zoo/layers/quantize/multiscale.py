"""VAR-style multi-scale residual quantization (VAR, TokenFlow): one codebook, a schedule of grid sizes.

At scale s the residual is area-downsampled to the s-th grid, quantized, the codes upsampled back to
the full grid (bicubic, as TokenFlow and VAR do), optionally refined by a shared 3x3 conv "phi", added
to the reconstruction and subtracted from the residual.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from registry.errors import ConfigError, InputError
from zoo.layers.quantize.base import Quantizer, QuantizerOutput, check_ids, check_latents
from zoo.layers.quantize.residual import mean_losses
from zoo.layers.quantize.usage import CodebookUsage


def phi_index(scale_index: int, num_scales: int, num_phi: int) -> int:
    """Which of `num_phi` shared convs refines scale `scale_index` (VAR's PhiPartiallyShared ticks)."""
    if num_phi == 4:
        ticks = np.linspace(1 / 3 / num_phi, 1 - 1 / 3 / num_phi, num_phi)
    else:
        ticks = np.linspace(1 / 2 / num_phi, 1 - 1 / 2 / num_phi, num_phi)
    at = scale_index / (num_scales - 1) if num_scales > 1 else 0.0
    return int(np.argmin(np.abs(ticks - at)))


class Phi(nn.Module):
    """VAR's residual refinement: h * (1 - ratio) + conv3x3(h) * ratio, channels-first."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1)
        self.ratio = ratio

    def forward(self, h: Tensor) -> Tensor:
        return h * (1 - self.ratio) + self.conv(h) * self.ratio


class MultiScaleResidualVQ(Quantizer):
    """Multi-scale residual quantization of a grid z (B, H, W, dim) with one inner quantizer.

    `scales` lists grid sizes coarse to fine (an int n means n x n); the last one is the full grid
    (H, W). ids are one flat int64 sequence (B, sum of h*w) in upstream order (scale by scale, each
    grid row-major), and `split_ids` gives the per-scale grids (B, h, w). `decode` accepts any prefix
    of the scales (coarse-only decoding) and returns (B, H, W, dim). `num_phi > 0` adds VAR's shared
    refinement convs (TokenFlow keeps them off by default). The inner quantizer must take
    (..., dim) latents and give single-codebook ids (...), e.g. VectorQuantizer or DualCodebookVQ.
    """

    def __init__(
        self,
        quantizer: Quantizer,
        scales: Sequence[int | tuple[int, int]],
        upsample_mode: str = "bicubic",
        downsample_mode: str = "area",
        num_phi: int = 0,
        phi_ratio: float = 0.5,
    ) -> None:
        super().__init__()
        if not scales:
            raise ConfigError("scales must list at least one grid size.")
        self.quantizer = quantizer
        self.scales = tuple((s, s) if isinstance(s, int) else (int(s[0]), int(s[1])) for s in scales)
        self.dim = quantizer.dim
        self.codebook_size = quantizer.codebook_size
        self.upsample_mode = upsample_mode
        self.downsample_mode = downsample_mode
        self.phis = nn.ModuleList(Phi(self.dim, phi_ratio) for _ in range(num_phi))
        self.phi_for_scale = [
            phi_index(i, len(self.scales), num_phi) if num_phi else -1 for i in range(len(self.scales))
        ]
        self.tokens_per_scale = [h * w for h, w in self.scales]

    @property
    def num_tokens(self) -> int:
        return sum(self.tokens_per_scale)

    def _resize(self, x: Tensor, size: tuple[int, int], mode: str) -> Tensor:
        corners = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
        return F.interpolate(x, size=size, mode=mode, **corners)

    def _expand(self, codes: Tensor, scale_index: int) -> Tensor:
        """Codes (B, h, w, D) of one scale -> their contribution (B, D, H, W) at the full grid."""
        up = self._resize(codes.permute(0, 3, 1, 2), self.scales[-1], self.upsample_mode)
        index = self.phi_for_scale[scale_index]
        return self.phis[index](up) if index >= 0 else up

    def _check_grid(self, z: Tensor) -> None:
        check_latents(z, self.dim)
        if z.ndim != 4 or tuple(z.shape[1:3]) != self.scales[-1]:
            h, w = self.scales[-1]
            raise InputError(
                f"z must be a grid of shape (B, {h}, {w}, {self.dim}) (channels last, last scale {h}x{w}); "
                f"got {tuple(z.shape)}."
            )

    def encode(self, z: Tensor) -> Tensor:
        """Grid (B, H, W, dim) -> flat int64 ids (B, sum of h*w)."""
        self._check_grid(z)
        residual = z.float().permute(0, 3, 1, 2)
        ids = []
        for index, size in enumerate(self.scales):
            small = self._resize(residual, size, self.downsample_mode).permute(0, 2, 3, 1)
            scale_ids = self.quantizer.encode(small)
            residual = residual - self._expand(self.quantizer.decode(scale_ids), index)
            ids.append(scale_ids.reshape(z.shape[0], -1))
        return torch.cat(ids, dim=1)

    def split_ids(self, ids: Tensor) -> list[Tensor]:
        """Flat ids (B, L) over a prefix of the scales -> per-scale grids [(B, h, w), ...]."""
        count = self._scale_count(ids)
        parts = ids.split(self.tokens_per_scale[:count], dim=1)
        return [p.reshape(ids.shape[0], h, w) for p, (h, w) in zip(parts, self.scales[:count], strict=True)]

    def _scale_count(self, ids: Tensor) -> int:
        if ids.ndim != 2:
            raise InputError(
                f"ids must be flat (B, L) with L a sum of the first scales' h*w; got {tuple(ids.shape)}."
            )
        total = 0
        for count, tokens in enumerate(self.tokens_per_scale, start=1):
            total += tokens
            if total == ids.shape[1]:
                return count
        prefix = np.cumsum(self.tokens_per_scale).tolist()
        raise InputError(
            f"ids length {ids.shape[1]} is not a sum of the first scales' tokens; expected one of {prefix}."
        )

    def decode(self, ids: Tensor) -> Tensor:
        """Flat ids (B, L) over the first scales -> reconstruction (B, H, W, dim) of the full grid."""
        check_ids(ids, self.codebook_size)
        total: Tensor | None = None
        for index, grid in enumerate(self.split_ids(ids)):
            part = self._expand(self.quantizer.decode(grid), index)
            total = part if total is None else total + part
        assert total is not None
        return total.permute(0, 2, 3, 1)

    def forward(self, z: Tensor) -> QuantizerOutput:
        self._check_grid(z)
        residual = z.float().permute(0, 3, 1, 2)
        total: Tensor | None = None
        ids, losses, extras = [], [], {}
        for index, size in enumerate(self.scales):
            small = self._resize(residual, size, self.downsample_mode).permute(0, 2, 3, 1)
            out = self.quantizer(small)
            part = self._expand(out.quantized, index)
            total = part if total is None else total + part
            residual = residual - part.detach()
            ids.append(out.ids.reshape(z.shape[0], -1))
            losses.append(out.losses)
            extras[f"ids_scale{index}"] = out.ids
        assert total is not None
        flat = torch.cat(ids, dim=1)
        usage = CodebookUsage.from_ids(flat, self.codebook_size) if flat.numel() else None
        return QuantizerOutput(total.permute(0, 2, 3, 1), flat, mean_losses(losses), usage, extras)
