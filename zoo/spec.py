"""`TokenSpec`: what a tokenizer's tokens are, in numbers a user can plan with."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

MODALITIES = ("image", "video", "audio")
KINDS = ("discrete", "binary", "continuous")


@dataclass(frozen=True)
class TokenSpec:
    """The token contract of a tokenizer.

    `token_rate` is tokens per second per codebook for audio/video (None for images); `tokens_per_item`
    is the number of positions for a fixed-size image (None when it depends on the input).
    `export` maps a part ("encoder", "decoder") to None when it exports, or to the reason it does not.
    """

    modality: str
    kind: str = "discrete"
    codebook_sizes: tuple[int, ...] = ()
    bits_per_token: int | None = None
    latent_dim: int | None = None
    token_rate: float | None = None
    tokens_per_item: int | None = None
    downsample: tuple[int, ...] = ()
    sample_rate: int | None = None
    channels: int = 3
    input_size: tuple[int, ...] | None = None
    value_range: tuple[float, float] = (-1.0, 1.0)
    can_decode: bool = True
    decode_needs: tuple[str, ...] = ()
    stochastic_decode: bool = False
    export: dict[str, str | None] = field(default_factory=lambda: {"encoder": None, "decoder": None})
    notes: str = ""

    @property
    def bits_per_position(self) -> float:
        if self.bits_per_token is not None:
            return float(self.bits_per_token)
        return float(sum(math.log2(s) for s in self.codebook_sizes))

    @property
    def bitrate(self) -> float | None:
        """Bits per second for audio/video tokenizers with discrete tokens."""
        if self.token_rate is None or self.kind == "continuous":
            return None
        return self.token_rate * self.bits_per_position

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["bitrate"] = self.bitrate
        return out

    def rows(self) -> list[tuple[str, str]]:
        """(field, value) rows for `zoo info` and the model card."""
        rows = [("modality", self.modality), ("token kind", self.kind)]
        if self.codebook_sizes:
            sizes = self.codebook_sizes
            text = f"{len(sizes)} x {sizes[0]}" if len(set(sizes)) == 1 and len(sizes) > 1 else str(sizes[0])
            if len(set(sizes)) > 1:
                text = " + ".join(str(s) for s in sizes)
            rows.append(("codebooks", text))
        if self.bits_per_token:
            rows.append(("bits per token", str(self.bits_per_token)))
        if self.latent_dim:
            rows.append(("latent channels", str(self.latent_dim)))
        if self.sample_rate:
            rows.append(("sample rate", f"{self.sample_rate} Hz"))
        if self.input_size:
            rows.append(("input size", " x ".join(str(s) for s in self.input_size)))
        if self.downsample:
            rows.append(("downsampling", " x ".join(str(s) for s in self.downsample)))
        if self.token_rate is not None:
            rows.append(("token rate", f"{self.token_rate:g} /s per codebook"))
        if self.tokens_per_item is not None:
            rows.append(("tokens per item", str(self.tokens_per_item)))
        if self.bitrate is not None:
            rows.append(("bitrate", f"{self.bitrate:.1f} bit/s"))
        rows.append(("decodes", "yes" if self.can_decode else "no (encoder-only)"))
        if self.decode_needs:
            rows.append(("decode needs", ", ".join(self.decode_needs)))
        if self.stochastic_decode:
            rows.append(("stochastic decode", "yes (pass noise= or generator= to reproduce)"))
        for part, reason in self.export.items():
            rows.append((f"ONNX {part}", "yes" if reason is None else f"no: {reason}"))
        return rows
