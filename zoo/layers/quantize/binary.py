"""Binary quantizers: LFQ (sign), BSQ (sign on the unit sphere) and grouped binary codes (e.g. 128 bits).

The codebook {-1, 1}^bits is never materialised: ids are read from the signs, codes from the id bits,
and the entropy loss is factorised over groups of bits.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from registry.errors import ConfigError, InputError
from zoo.layers.quantize.base import (
    Quantizer,
    QuantizerOutput,
    check_ids,
    check_latents,
    place_value_dtype,
    place_value_sum,
)
from zoo.layers.quantize.training import straight_or_rotated
from zoo.layers.quantize.usage import usage_or_none

BitOrder = Literal["lsb_first", "msb_first"]
MAX_ID_BITS = 63


def _bit_weights(group_bits: int, bit_order: BitOrder, device: torch.device | None = None) -> Tensor:
    if bit_order not in ("lsb_first", "msb_first"):
        raise ConfigError(f"bit_order must be 'lsb_first' or 'msb_first'; got {bit_order!r}.")
    if not 1 <= group_bits <= MAX_ID_BITS:
        raise ConfigError(
            f"group_bits must lie in [1, {MAX_ID_BITS}] so that an id fits int64; got {group_bits}."
        )
    powers = torch.arange(group_bits, dtype=torch.long, device=device)
    if bit_order == "msb_first":
        powers = powers.flip(0)
    return torch.pow(2, powers)


def bits_to_ids(bits: Tensor, group_bits: int, bit_order: BitOrder = "lsb_first") -> Tensor:
    """Bits (..., n) (bool or 0/1 integers) -> int64 ids (..., n // group_bits), one per group of bits.

    Within a group, with "lsb_first" the group's first bit has weight 1 (Open-MAGVIT2 order:
    id = sum bit_i 2^i); with "msb_first" it has weight 2^(group_bits-1) (BSQ-ViT order).
    Lossless inverse: `ids_to_bits`.
    """
    if bits.shape[-1] % group_bits:
        raise InputError(f"the bit axis ({bits.shape[-1]}) must be a multiple of group_bits ({group_bits}).")
    weights = _bit_weights(group_bits, bit_order, bits.device).to(place_value_dtype(2**group_bits - 1))
    grouped = bits.reshape(*bits.shape[:-1], bits.shape[-1] // group_bits, group_bits)
    return place_value_sum(grouped, weights)


def ids_to_bits(ids: Tensor, group_bits: int, bit_order: BitOrder = "lsb_first") -> Tensor:
    """int64 ids (..., g) -> bool bits (..., g * group_bits); the inverse of `bits_to_ids`."""
    weights = _bit_weights(group_bits, bit_order, ids.device)
    # Bitwise AND, not floor division: exporters turn integer division into float division.
    bits = torch.bitwise_and(ids.long().unsqueeze(-1), weights) != 0
    return bits.reshape(*ids.shape[:-1], ids.shape[-1] * group_bits)


def factorized_entropy(
    z: Tensor, code_scale: float, inv_temperature: float, group_size: int = 1
) -> tuple[Tensor, Tensor]:
    """(mean per-sample entropy, codebook entropy) of the soft assignment of z (N, bits) to ±code_scale codes.

    The soft assignment is softmax(2 * inv_temperature * z.c) over codes c, as in Open-MAGVIT2 (logits
    2 z.c / T) and BSQ-ViT. It factorises exactly over groups of bits for the per-sample term; the
    codebook term is approximated by the sum of the groups' entropies (BSQ-ViT, Sec. 3.2). Memory is
    N * bits / group_size * 2^group_size, never N * 2^bits.
    """
    bits = z.shape[-1]
    if bits % group_size:
        raise ConfigError(f"entropy group size ({group_size}) must divide the number of bits ({bits}).")
    codes = ids_to_bits(torch.arange(2**group_size, device=z.device).unsqueeze(-1), group_size)
    codes = (codes.to(z.dtype) * 2 - 1) * code_scale
    grouped = z.reshape(-1, bits // group_size, group_size)
    logits = 2 * inv_temperature * grouped @ codes.T
    probs = logits.softmax(-1)
    per_sample = -(probs * F.log_softmax(logits, -1)).sum(-1).sum(-1).mean()
    avg = probs.mean(0)
    codebook = -(avg * torch.log(avg.clamp(min=1e-8))).sum(-1).sum()
    return per_sample, codebook


class LFQ(Quantizer):
    """Lookup-free quantization: each channel becomes ±codebook_scale by its sign (0 maps to -).

    z (..., bits) -> int64 ids (...) in [0, 2^bits), id = sum over channels of [z_i > 0] * 2^i with
    `bit_order="lsb_first"` (Open-MAGVIT2, Amphion); "msb_first" gives channel 0 the highest weight.
    Training adds the factorised entropy loss and a commitment loss.
    """

    scale_to_unit_sphere = False

    def __init__(
        self,
        bits: int,
        bit_order: BitOrder = "lsb_first",
        codebook_scale: float = 1.0,
        entropy_weight: float = 0.1,
        sample_weight: float = 1.0,
        batch_weight: float = 1.0,
        inv_temperature: float = 100.0,
        entropy_group_size: int = 1,
        commitment_weight: float = 0.25,
    ) -> None:
        super().__init__()
        if not 1 <= bits <= 62:
            raise ConfigError(
                f"bits must lie in [1, 62] for a single int64 id; got {bits} (use GroupedBinary)."
            )
        self.bits = int(bits)
        self.dim = int(bits)
        self.codebook_size = 2**bits
        self.bit_order: BitOrder = bit_order
        self.codebook_scale = float(codebook_scale)
        self.entropy_weight = entropy_weight
        self.sample_weight = sample_weight
        self.batch_weight = batch_weight
        self.inv_temperature = inv_temperature
        self.entropy_group_size = entropy_group_size
        self.commitment_weight = commitment_weight
        self.register_buffer("bit_weights", _bit_weights(bits, bit_order), persistent=False)
        value_dtype = place_value_dtype(2**bits - 1)
        self.register_buffer("place_values", self.bit_weights.to(value_dtype), persistent=False)

    @property
    def code_scale(self) -> float:
        return self.codebook_scale

    def prepare(self, z: Tensor) -> Tensor:
        return z if z.dtype in (torch.float32, torch.float64) else z.float()

    def _codes(self, positive: Tensor, dtype: torch.dtype) -> Tensor:
        scale = self.code_scale
        return torch.where(positive, scale, -scale).to(dtype)

    def encode(self, z: Tensor) -> Tensor:
        """Latents (..., bits) -> int64 ids (...)."""
        check_latents(z, self.dim)
        return place_value_sum(self.prepare(z) > 0, self.place_values)

    def decode(self, ids: Tensor) -> Tensor:
        """Integer ids (...) -> codes (..., bits) of ±codebook_scale (±1/sqrt(bits) for BSQ)."""
        check_ids(ids, self.codebook_size)
        return self._codes(torch.bitwise_and(ids.long().unsqueeze(-1), self.bit_weights) != 0, torch.float32)

    def forward(self, z: Tensor) -> QuantizerOutput:
        check_latents(z, self.dim)
        x = self.prepare(z)
        positive = x > 0
        ids = place_value_sum(positive, self.place_values)
        q = self._codes(positive, x.dtype)
        losses: dict[str, Tensor] = {}
        if self.training:
            if self.entropy_weight > 0:
                per_sample, codebook = factorized_entropy(
                    x.reshape(-1, self.bits), self.code_scale, self.inv_temperature, self.entropy_group_size
                )
                losses["entropy"] = self.entropy_weight * (
                    self.sample_weight * per_sample - self.batch_weight * codebook
                )
            if self.commitment_weight > 0:
                losses["commitment"] = self.commitment_weight * F.mse_loss(x, q.detach())
            quantized = straight_or_rotated(x, q, "ste")
        else:
            quantized = q
        usage = usage_or_none(ids, self.codebook_size)
        return QuantizerOutput(quantized=quantized, ids=ids, losses=losses, usage=usage)


class BSQ(LFQ):
    """Binary spherical quantization (Zhao et al., BSQ-ViT): l2-normalise, then sign / sqrt(bits).

    Same ids as LFQ on the same signs, but `bit_order` defaults to "msb_first" (BSQ-ViT's
    basis 2^(bits-1-i); TaDiCodec's 14-bit BSQ is built on it). Codes lie on the unit sphere.
    `normalize=False` skips the l2 normalisation when the caller already did it (the signs, and so
    the ids and codes, are the same either way).
    """

    def __init__(
        self,
        bits: int,
        bit_order: BitOrder = "msb_first",
        normalize: bool = True,
        entropy_weight: float = 0.1,
        sample_weight: float = 1.0,
        batch_weight: float = 1.0,
        inv_temperature: float = 1.0,
        entropy_group_size: int = 1,
        commitment_weight: float = 0.25,
    ) -> None:
        super().__init__(
            bits,
            bit_order,
            1.0,
            entropy_weight,
            sample_weight,
            batch_weight,
            inv_temperature,
            entropy_group_size,
            commitment_weight,
        )
        self.normalize = normalize

    @property
    def code_scale(self) -> float:
        return 1.0 / math.sqrt(self.bits)

    def prepare(self, z: Tensor) -> Tensor:
        x = super().prepare(z)
        return F.normalize(x, dim=-1) if self.normalize else x


class GroupedBinary(Quantizer):
    """Sign quantization of `bits` channels, ids as groups of `group_bits` bits (UniWeTok: 128 bits).

    z (..., bits) -> int64 ids (..., bits // group_bits): group j holds channels
    [j*group_bits, (j+1)*group_bits), read with `bit_order` inside the group (see `bits_to_ids`).
    `encode_bits`/`decode_bits` give the raw bits (bool, channel order); both views are lossless.
    Codes are ±scale (0 maps to -).
    """

    def __init__(
        self, bits: int, group_bits: int, bit_order: BitOrder = "lsb_first", scale: float = 1.0
    ) -> None:
        super().__init__()
        if bits < 1 or group_bits < 1 or bits % group_bits:
            raise ConfigError(f"bits ({bits}) must be a positive multiple of group_bits ({group_bits}).")
        _bit_weights(group_bits, bit_order)
        self.bits = int(bits)
        self.dim = int(bits)
        self.group_bits = int(group_bits)
        self.num_groups = bits // group_bits
        self.bit_order: BitOrder = bit_order
        self.scale = float(scale)
        self.codebook_size = 2**bits

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return (2**self.group_bits,) * self.num_groups

    def encode_bits(self, z: Tensor) -> Tensor:
        """Latents (..., bits) -> bool bits (..., bits), True where z > 0."""
        check_latents(z, self.dim)
        return z > 0

    def decode_bits(self, bits: Tensor) -> Tensor:
        """Bits (..., bits) (bool or 0/1) -> codes (..., bits) of ±scale."""
        if bits.shape[-1] != self.bits:
            raise InputError(f"bits must have shape (..., {self.bits}); got {tuple(bits.shape)}.")
        return torch.where(bits.bool(), 1.0, -1.0) * self.scale

    def encode(self, z: Tensor) -> Tensor:
        """Latents (..., bits) -> int64 ids (..., bits // group_bits)."""
        return bits_to_ids(self.encode_bits(z), self.group_bits, self.bit_order)

    def decode(self, ids: Tensor) -> Tensor:
        """Integer ids (..., bits // group_bits) -> codes (..., bits)."""
        check_ids(ids, self.codebook_sizes, codebook_axis=True)
        if ids.shape[-1] != self.num_groups:
            raise InputError(
                f"ids must have shape (..., {self.num_groups}) (one per group); got {tuple(ids.shape)}."
            )
        return self.decode_bits(ids_to_bits(ids, self.group_bits, self.bit_order))

    def forward(self, z: Tensor) -> QuantizerOutput:
        bits = self.encode_bits(z)
        x = z if z.dtype in (torch.float32, torch.float64) else z.float()
        q = (torch.where(bits, 1.0, -1.0) * self.scale).to(x.dtype)
        quantized = straight_or_rotated(x, q, "ste") if self.training else q
        ids = bits_to_ids(bits, self.group_bits, self.bit_order)
        usage = usage_or_none(ids, 2**self.group_bits, codebook_axis=True)
        return QuantizerOutput(quantized=quantized, ids=ids, losses={}, usage=usage)
