"""The interface every quantizer shares, and the cheap input checks they all run.

Layout is channels-last: latents `z` are `(..., dim)` floats; ids are int64 `(...)` for one codebook
and `(..., n_q)` (codebook axis last) for residual, group and grouped-binary quantizers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from registry.errors import InputError
from zoo.layers.quantize.usage import CodebookUsage


@dataclass
class QuantizerOutput:
    """What `Quantizer.forward` returns.

    `quantized` carries straight-through (or rotation-trick) gradients in training and equals
    `decode(encode(z))` exactly in eval mode. `extras` holds quantizer-specific tensors (for example
    both code vectors of a dual-codebook quantizer).
    """

    quantized: Tensor
    ids: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)
    usage: CodebookUsage | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)


def checks_enabled() -> bool:
    """False while exporting, tracing or compiling, where data-dependent checks cannot run."""
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    compiler = torch.compiler
    if (
        getattr(compiler, "is_exporting", lambda: False)()
        or getattr(compiler, "is_compiling", lambda: False)()
    ):
        return False
    return not torch.onnx.is_in_onnx_export()


def check_latents(z: Tensor, dim: int, name: str = "z") -> None:
    """Raise InputError unless `z` is a finite floating tensor whose last axis has `dim` channels."""
    if not checks_enabled():
        return
    if not isinstance(z, Tensor):
        raise InputError(f"{name} must be a torch.Tensor of shape (..., {dim}); got {type(z).__name__}.")
    if not z.is_floating_point():
        raise InputError(
            f"{name} must be a floating tensor of shape (..., {dim}); got dtype {z.dtype}. "
            "Convert it with .float() first."
        )
    if z.ndim < 1 or z.shape[-1] != dim:
        raise InputError(
            f"{name} must have shape (..., {dim}) (channels last); got {tuple(z.shape)}. "
            "Move the channel axis last (e.g. x.movedim(1, -1)) or check the quantizer's dim."
        )
    # One cheap reduction: any NaN/Inf makes the sum non-finite; only then count (the sum can also
    # overflow on huge but finite values, which the exact count below rules out).
    if z.numel() and not bool(torch.isfinite(z.sum())) and not bool(torch.isfinite(z).all()):
        bad = int((~torch.isfinite(z)).sum())
        raise InputError(
            f"{name} must be finite; got {bad} NaN/Inf value(s) in a tensor of shape {tuple(z.shape)}. "
            "Check the encoder output (a diverged model or bad input audio/pixels)."
        )


def check_ids(
    ids: Tensor, sizes: int | Sequence[int], name: str = "ids", codebook_axis: bool = False
) -> None:
    """Raise InputError unless `ids` is an integer tensor with every id in [0, size).

    With `codebook_axis`, `sizes` lists one size per codebook and the last axis of `ids` indexes the
    codebooks (it may be shorter than `sizes`: first-N decoding).
    """
    if not checks_enabled():
        return
    if not isinstance(ids, Tensor):
        raise InputError(f"{name} must be an integer torch.Tensor; got {type(ids).__name__}.")
    if ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
        raise InputError(
            f"{name} must be an integer tensor (int64 preferred); got dtype {ids.dtype}. "
            "Pass the ids returned by encode(), or convert with .long() if they are whole numbers."
        )
    size_list = [int(sizes)] if isinstance(sizes, int) else [int(s) for s in sizes]
    if codebook_axis:
        if ids.ndim < 1 or not 1 <= ids.shape[-1] <= len(size_list):
            raise InputError(
                f"{name} must have shape (..., n_q) with 1 <= n_q <= {len(size_list)} (codebook axis last); "
                f"got {tuple(ids.shape)}."
            )
        size_list = size_list[: ids.shape[-1]]
    if ids.numel() == 0:
        return
    low = int(ids.min())
    if codebook_axis and len(set(size_list)) > 1:
        limit = torch.tensor(size_list, device=ids.device)
        over = bool((ids.long() >= limit).any())
    else:
        over = int(ids.max()) >= size_list[0]
    if low < 0 or over:
        shown = size_list[0] if len(set(size_list)) == 1 else size_list
        raise InputError(
            f"{name} must lie in [0, codebook_size) with codebook_size {shown}; got values in "
            f"[{low}, {int(ids.max())}]. Were these ids made by a different tokenizer or codebook?"
        )


class Quantizer(nn.Module):
    """Base class: `forward(z) -> QuantizerOutput`, `encode(z) -> ids`, `decode(ids) -> codes`.

    Subclasses set `dim` (the latent channels they take), and `codebook_size` (one codebook) or
    `codebook_sizes` (one entry per codebook, ids with the codebook axis last). `encode`/`decode` are
    the exportable inference path; `forward` adds losses, usage statistics and training updates.
    """

    dim: int
    codebook_size: int

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return (int(self.codebook_size),)

    def encode(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def decode(self, ids: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, z: Tensor) -> QuantizerOutput:
        raise NotImplementedError


def place_value_dtype(max_id: int) -> torch.dtype:
    """The narrowest dtype in which sums of digit * place value stay exact up to `max_id`."""
    if max_id < 2**24:
        return torch.float32
    if max_id < 2**53:
        return torch.float64
    return torch.int64


def place_value_sum(digits: Tensor, place_values: Tensor) -> Tensor:
    """int64 sum over the last axis of digits * place_values (a mixed-radix or binary number).

    Done as a matrix-vector product in a float dtype wide enough to be exact (`place_values` carries
    it, see `place_value_dtype`): one BLAS call instead of a slow reduction over a short last axis.
    """
    if place_values.dtype == torch.int64:
        # Explicit adds over the (static, <= 63) positions: onnxruntime's int64 ReduceSum rounds
        # through float64 beyond 2^53.
        digits = digits.long()
        total = digits[..., 0] * place_values[0]
        for i in range(1, digits.shape[-1]):
            total = total + digits[..., i] * place_values[i]
        return total
    return (digits.to(place_values.dtype) @ place_values).long()
