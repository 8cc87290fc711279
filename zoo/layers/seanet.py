"""EnCodec's SEANet encoder with weight norm folded into plain convolutions, batched over ragged lengths.

Layout (EnCodec, arXiv 2210.13438): conv k7 -> per ratio in reversed(ratios): residual blocks
(ELU, conv k3 C -> C/compress, ELU, conv k1 back to C, plus a k1-conv or identity shortcut), ELU, strided
conv (kernel 2 * ratio) doubling the channels -> LSTM with a skip -> ELU -> conv k7 to `dimension`.

Padding is EnCodec's `SConv1d` rule: total = (k - 1) * dilation + 1 - stride, split right = total // 2,
left = total - right (causal: all left), plus extra right padding so the last window is full; mode
reflect, and for inputs no longer than the padding, upstream's zero extension before reflecting. A
conv of stride s thus maps n samples to ceil(n / s) frames.

Ragged batches: with `lengths`, every conv pads each item at its *own* end (a gather builds each item's
reflect padding), so an item's valid frames equal what encoding it alone gives; the LSTM runs forward in
time, so the samples past an item's end never reach its valid frames. Under export the LSTM runs as a
`scan` (torch.export specialises `nn.LSTM` to the traced length) and padding uses the gather path, so
the graph has no shape-dependent branches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from registry.errors import CheckpointError


@dataclass
class SEANetEncoderConfig:
    """Hyperparameters of `SEANetEncoder` (defaults: WavTokenizer's 75-token encoder)."""

    channels: int = 1
    dimension: int = 512
    n_filters: int = 32
    n_residual_layers: int = 1
    ratios: list[int] = field(default_factory=lambda: [8, 5, 4, 2])
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_base: int = 2
    compress: int = 2
    lstm_layers: int = 2
    true_skip: bool = False
    causal: bool = False
    elu_alpha: float = 1.0

    @property
    def hop_length(self) -> int:
        hop = 1
        for r in self.ratios:
            hop *= int(r)
        return hop


def exporting() -> bool:
    """True while torch.export / torch.onnx (dynamo) / tracing runs this code."""
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and getattr(compiler, "is_exporting", lambda: False)())


# -- padding -------------------------------------------------------------------------------------


def reflect_index(lengths: Tensor, size: int, left: int, fixed_right: int, stride: int, zero_at: int) -> Tensor:
    """Source index per output position of EnCodec's padding, for each item: (B, size) int64.

    Position j of item b reads input sample `index[b, j]`; `zero_at` (one past the input) stands for a
    zero: upstream's zero extension of inputs not longer than their padding. Positions past an item's
    padded end read arbitrary samples (its conv outputs there are never used). `fixed_right` is the
    symmetric part of the right padding; the rest fills the last stride window.
    """
    n = lengths.reshape(-1, 1).long()
    right = fixed_right + (-n) % stride if stride > 1 else torch.full_like(n, fixed_right)
    # pad1d zero-extends inputs not longer than the longest pad to longest + 1 samples, then reflects
    virtual = torch.maximum(n, torch.clamp(right, min=left) + 1)
    t = (torch.arange(size, device=lengths.device) - left).abs().unsqueeze(0)
    v = torch.minimum(t, 2 * virtual - 2 - t)
    return torch.where(v < n, v, zero_at).clamp(min=0)


def padded_size(length: int, stride: int, span: int) -> int:
    """Length after EnCodec padding of a `length`-sample input: ceil(length / stride) * stride + span - stride.

    Written with non-negative floor division only: ONNX integer Div truncates, so `-(-a // b)` breaks.
    """
    return (length + stride - 1) // stride * stride + span - stride


def gather_pad(x: Tensor, index: Tensor) -> Tensor:
    """x (B, C, L) -> (B, C, P) with x[b, :, index[b, j]], index L meaning zero; index (B or 1, P)."""
    x_ext = torch.cat([x, torch.zeros_like(x[..., :1])], -1)
    if index.shape[0] == 1:
        return x_ext.index_select(-1, index[0])
    return torch.gather(x_ext, -1, index.unsqueeze(1).expand(-1, x.shape[1], -1))


class SConv1d(nn.Conv1d):
    """Conv1d with EnCodec's padding applied in `forward`; lengths (B,) give per-item padding."""

    def __init__(self, *args: Any, causal: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.causal = causal

    @property
    def span(self) -> int:
        return (self.kernel_size[0] - 1) * self.dilation[0] + 1

    def pads(self) -> tuple[int, int]:
        """(left, symmetric right) padding; the right side gets extra to fill the last window."""
        total = self.span - self.stride[0]
        if self.causal:
            return total, 0
        right = total // 2
        return total - right, right

    def out_lengths(self, lengths: Tensor) -> Tensor:
        return (lengths + self.stride[0] - 1) // self.stride[0]

    def pad(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        left, right = self.pads()
        stride, span = self.stride[0], self.span
        if left == right == 0 and stride == 1:
            return x  # k=1 convs: nothing to pad, and positions past an item's end stay unread
        length = x.shape[-1]
        if lengths is None:
            if not exporting():
                extra = padded_size(length, stride, span) - length - left - right
                if length > max(left, right + extra):
                    return F.pad(x, (left, right + extra), mode="reflect")
            lengths = torch.full((1,), length, dtype=torch.long, device=x.device)
        # the batch's length bounds every clip's padded length
        return gather_pad(x, reflect_index(lengths, padded_size(length, stride, span), left, right, stride, length))

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:  # type: ignore[override]
        return super().forward(self.pad(x, lengths))


class SEANetResnetBlock(nn.Module):
    """ELU-conv(k, dilation) to hidden, ELU-conv1 back, plus a k1-conv (or identity) shortcut."""

    def __init__(self, dim: int, kernel_size: int, dilation: int, compress: int, true_skip: bool,
                 causal: bool, alpha: float) -> None:
        super().__init__()
        hidden = dim // compress
        self.act = nn.ELU(alpha)
        self.conv1 = SConv1d(dim, hidden, kernel_size, dilation=dilation, causal=causal)
        self.conv2 = SConv1d(hidden, dim, 1, causal=causal)
        self.shortcut = None if true_skip else SConv1d(dim, dim, 1, causal=causal)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        h = self.conv2(self.act(self.conv1(self.act(x), lengths)), lengths)
        skip = x if self.shortcut is None else self.shortcut(x, lengths)
        return skip + h


class SEANetStage(nn.Module):
    """Residual blocks, then ELU and the strided conv that downsamples by `ratio` and doubles channels."""

    def __init__(self, cfg: SEANetEncoderConfig, channels: int, ratio: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SEANetResnetBlock(channels, cfg.residual_kernel_size, cfg.dilation_base**j, cfg.compress,
                              cfg.true_skip, cfg.causal, cfg.elu_alpha)
            for j in range(cfg.n_residual_layers)
        )
        self.act = nn.ELU(cfg.elu_alpha)
        self.down = SConv1d(channels, channels * 2, ratio * 2, stride=ratio, causal=cfg.causal)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        for block in self.blocks:
            x = block(x, lengths)
        x = self.down(self.act(x), lengths)
        return x, None if lengths is None else self.down.out_lengths(lengths)


def lstm_scan(lstm: nn.LSTM, seq: Tensor) -> Tensor:
    """A unidirectional nn.LSTM (T, B, C) -> (T, B, H) as one torch `scan`, which exports with dynamic T.

    All layers advance together in a single scan (carry: h and c of every layer); the first layer's input
    projections are one matmul over all steps. Gate order i, f, g, o. Inference only (no gradients).
    """
    from torch._higher_order_ops.scan import scan

    layers = range(lstm.num_layers)
    w_ih = [getattr(lstm, f"weight_ih_l{k}") for k in layers]
    w_hh = [getattr(lstm, f"weight_hh_l{k}") for k in layers]
    bias = [getattr(lstm, f"bias_ih_l{k}") + getattr(lstm, f"bias_hh_l{k}") if lstm.bias else None for k in layers]

    def cell(gates: Tensor, h: Tensor, c: Tensor, k: int) -> tuple[Tensor, Tensor]:
        i, f, g, o = (gates + h @ w_hh[k].T).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def step(carry: tuple[Tensor, ...], gates: Tensor) -> Any:
        out = []
        h, c = cell(gates, carry[0], carry[1], 0)
        out += [h, c]
        for k in layers[1:]:
            h, c = cell(F.linear(h, w_ih[k], bias[k]), carry[2 * k], carry[2 * k + 1], k)
            out += [h, c]
        return tuple(out), h.clone()

    with torch.no_grad():
        gates_in = F.linear(seq, w_ih[0], bias[0])
        init = tuple(seq.new_zeros(seq.shape[1], lstm.hidden_size) for _ in range(2 * lstm.num_layers))
        _, out = scan(step, init, gates_in)
    return out


class SLSTM(nn.Module):
    """LSTM over time on (B, C, T) with a skip connection: y = LSTM(x) + x."""

    def __init__(self, dim: int, num_layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, num_layers)

    def forward(self, x: Tensor) -> Tensor:
        seq = x.permute(2, 0, 1)
        y = lstm_scan(self.lstm, seq) if exporting() else self.lstm(seq)[0]
        return y.permute(1, 2, 0) + x


class SEANetEncoder(nn.Module):
    """Waveform (B, channels, N) -> latent (B, dimension, ceil(N / hop_length))."""

    def __init__(self, config: SEANetEncoderConfig | None = None) -> None:
        super().__init__()
        cfg = config or SEANetEncoderConfig()
        self.config = cfg
        self.stem = SConv1d(cfg.channels, cfg.n_filters, cfg.kernel_size, causal=cfg.causal)
        stages = []
        channels = cfg.n_filters
        for ratio in reversed(cfg.ratios):
            stages.append(SEANetStage(cfg, channels, int(ratio)))
            channels *= 2
        self.stages = nn.ModuleList(stages)
        self.lstm = SLSTM(channels, cfg.lstm_layers) if cfg.lstm_layers else None
        self.act = nn.ELU(cfg.elu_alpha)
        self.head = SConv1d(channels, cfg.dimension, cfg.last_kernel_size, causal=cfg.causal)

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    def frames(self, samples: Tensor) -> Tensor:
        """Latent frames per item for `samples` input samples: ceil(samples / hop_length)."""
        return (samples + self.hop_length - 1) // self.hop_length

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """With `lengths` (B,), item b's first frames(lengths[b]) frames equal its unbatched encoding."""
        x = self.stem(x, lengths)
        for stage in self.stages:
            x, lengths = stage(x, lengths)
        if self.lstm is not None:
            x = self.lstm(x)
        return self.head(self.act(x), lengths)


# -- checkpoints ---------------------------------------------------------------------------------


def fold_weight_norm(g: Tensor, v: Tensor) -> Tensor:
    """w = g * v / ||v|| (norm over every dim but 0), bit-identical to torch's weight_norm forward."""
    return torch._weight_norm(v, g, 0)


def encodec_encoder_key_map(config: SEANetEncoderConfig) -> dict[str, str]:
    """Our `SEANetEncoder` parameter prefixes -> EnCodec's `encoder.model.{i}` prefixes (no `encoder.`).

    EnCodec numbers the Sequential: 0 stem; per stage the residual blocks, then ELU, then the strided
    conv; then the LSTM, ELU and final conv. Conv prefixes point at the module holding
    `conv.conv.weight_g/_v/bias`; residual blocks' convs are `block.1` and `block.3`.
    """
    out = {"stem": "model.0.conv.conv"}
    i = 1
    for s in range(len(config.ratios)):
        for j in range(config.n_residual_layers):
            ours = f"stages.{s}.blocks.{j}"
            out[f"{ours}.conv1"] = f"model.{i}.block.1.conv.conv"
            out[f"{ours}.conv2"] = f"model.{i}.block.3.conv.conv"
            if not config.true_skip:
                out[f"{ours}.shortcut"] = f"model.{i}.shortcut.conv.conv"
            i += 1
        out[f"stages.{s}.down"] = f"model.{i + 1}.conv.conv"
        i += 2
    if config.lstm_layers:
        out["lstm.lstm"] = f"model.{i}.lstm"
        i += 1
    out["head"] = f"model.{i + 1}.conv.conv"
    return out


def convert_encodec_encoder(state: dict[str, Tensor], prefix: str, config: SEANetEncoderConfig) -> dict[str, Tensor]:
    """Pop an EnCodec SEANet encoder's weights from `state` (keys under `prefix`) into our names.

    Accepts old-style weight norm (`weight_g`/`weight_v`), new-style parametrizations
    (`parametrizations.weight.original0/1`) or plain `weight`; folds the norm. Keys are popped so the
    caller holds no second copy and can see what is left unmapped.
    """
    out: dict[str, Tensor] = {}
    for ours, theirs in encodec_encoder_key_map(config).items():
        base = prefix + theirs
        if ours == "lstm.lstm":
            for name in [k for k in state if k.startswith(base + ".")]:
                out[f"{ours}.{name[len(base) + 1:]}"] = state.pop(name)
            continue
        if base + ".weight_g" in state:
            out[f"{ours}.weight"] = fold_weight_norm(state.pop(base + ".weight_g"), state.pop(base + ".weight_v"))
        elif base + ".parametrizations.weight.original0" in state:
            g = state.pop(base + ".parametrizations.weight.original0")
            out[f"{ours}.weight"] = fold_weight_norm(g, state.pop(base + ".parametrizations.weight.original1"))
        elif base + ".weight" in state:
            out[f"{ours}.weight"] = state.pop(base + ".weight")
        else:
            raise CheckpointError(
                f"expected the EnCodec encoder weight {base}.weight_g/weight_v (or .weight); it is missing. "
                "Does the checkpoint's encoder match the config (ratios, residual layers, LSTM)?"
            )
        if base + ".bias" in state:
            out[f"{ours}.bias"] = state.pop(base + ".bias")
    return out


__all__ = [
    "SConv1d",
    "SEANetEncoder",
    "SEANetEncoderConfig",
    "convert_encodec_encoder",
    "encodec_encoder_key_map",
    "fold_weight_norm",
    "lstm_scan",
    "reflect_index",
]
