"""TaDiCodec (Wang et al., NeurIPS 2025, arXiv 2508.16790): 24 kHz speech at 6.25 tokens/s, 14-bit BSQ.

Encoding: log-mel (128 bins, hop 480, magnitude, natural log, mean/std normalised) -> an 8-layer non-causal
Llama-style transformer -> linear resampling of the frames to T // 8 -> a 14-d projection, l2-normalised ->
BSQ (`zoo.layers.quantize.BSQ`): one id in [0, 16384) per 8 mel frames (87.5 bit/s).

Decoding is a text-aware flow: a 16-layer transformer predicts the velocity of the normalised mel given
the noisy mel, the flow time (adaptive RMSNorm scales), the upsampled code embeddings (added to every
frame) and the transcript's token ids (a prefix of the sequence), optionally after a speech prompt whose
mel frames lead the sequence and stay clean. 32 midpoint-time Euler steps with classifier-free guidance
(no text, zero codes) and std rescaling (`zoo.layers.flow`), then a Vocos vocoder (30 ConvNeXt blocks,
iSTFT head; `zoo.layers.vocos`, `zoo.layers.spectral`) reads the decoded normalised mel.

Length contract (upstream's): a clip of N samples has T = N // 480 mel frames (N >= 480) and T // 8
codes; the trailing T % 8 frames are not coded and the decoded audio has 8 * (T // 8) * 480 samples.
`encode(x, pad=True)` zero-pads each clip to a whole number of codes instead, and decode trims back to N.
With a prompt, the codes cover [prompt frames, target frames] and decoding returns the target only.

Upstream: github.com/HeCheng0625/Diffusion-Speech-Tokenizer (now AmphionTeam/...), `models/tts/tadicodec/`;
weights: Hub `amphion/TaDiCodec` (model.safetensors, vocoder/, text_tokenizer/). Our key names are
upstream's, so the converter maps names one to one and drops what the model does not use.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from registry.checkpoint import load_state_strict
from registry.errors import BackendError, CheckpointError, ConfigError, InputError
from registry.registry import register_converter, register_tokenizer
from zoo.audio_batch import check_lengths, resample_clips
from zoo.layers import flow
from zoo.layers.attention import MaskSpec, attention
from zoo.layers.mel import LogMel
from zoo.layers.quantize import BSQ
from zoo.layers.rotary import apply_rotary, rope_1d
from zoo.layers.spectral import PADDINGS, ISTFTHead, irfft_bases
from zoo.layers.vocos import VocosBackbone, VocosBackboneConfig
from zoo.spec import TokenSpec
from zoo.tokenizer import Tokenizer, check_ids
from zoo.tokens import Tokens

TEXT_TOKENIZER_FOLDER = "text_tokenizer"
TIE_EPS = 1e-4  # |latent| below this may change sign with batched rounding: such clips are re-encoded alone


def _published_vocoder() -> VocosBackboneConfig:
    return VocosBackboneConfig(
        input_channels=128,
        dim=1024,
        intermediate_dim=4096,
        num_layers=30,
        layer_scale_init_value=None,
        adanorm_num_embeddings=None,
        pos_net=False,
    )


@dataclass
class TaDiCodecConfig:
    """Hyperparameters; defaults are the published TaDiCodec (6.25 Hz, 14-bit BSQ, 24 kHz)."""

    sample_rate: int = 24000
    # mel front end (upstream `preprocess`)
    n_fft: int = 1920
    hop_length: int = 480
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float = 12000.0
    mel_mean: float = -4.92
    mel_var: float = 8.14
    # transformers (upstream DiffLlamaPrefix, Llama layers: SiLU-gated MLP, RoPE, RMSNorm)
    hidden_size: int = 1024
    num_heads: int = 16
    intermediate_size: int = 4096
    encoder_layers: int = 8
    decoder_layers: int = 16
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    # tokens
    down_sample_factor: int = 8
    bits: int = 14
    text_vocab_size: int = 32100
    # where `decode(text=...)` finds the text tokenizer: a local folder, or a Hub repo id whose
    # `text_tokenizer/` folder is looked up in the local Hugging Face cache (never downloaded here)
    text_tokenizer: str | None = "amphion/TaDiCodec"
    # training (flow matching)
    sigma: float = 1e-5
    cond_drop_p: float = 0.2
    context_drop_p: float = 0.2
    # vocoder (Vocos, plain LayerNorms, iSTFT head)
    vocoder: VocosBackboneConfig = field(default_factory=_published_vocoder)
    vocoder_n_fft: int = 1920
    vocoder_hop_length: int = 480
    vocoder_padding: str = "same"
    # default sampler (upstream reverse_diffusion as its pipeline calls it)
    sampling_steps: int = 32
    schedule: str = "linear"
    solver: str = "midpoint"
    cfg_scale: float = 2.0
    rescale_cfg: float = 0.75
    attention_backend: str | None = None


def _check_config(cfg: TaDiCodecConfig) -> None:
    if cfg.hidden_size % cfg.num_heads or (cfg.hidden_size // cfg.num_heads) % 2:
        raise ConfigError(
            f"tadicodec: hidden_size {cfg.hidden_size} must split into num_heads {cfg.num_heads} heads of an even size"
        )
    if cfg.hidden_size < 4:
        raise ConfigError(f"tadicodec: hidden_size must be >= 4 (sinusoidal time features), got {cfg.hidden_size}")
    if cfg.down_sample_factor < 1:
        raise ConfigError(f"tadicodec: down_sample_factor must be >= 1, got {cfg.down_sample_factor}")
    if not 1 <= cfg.bits <= 62:
        raise ConfigError(f"tadicodec: bits must lie in [1, 62] (one int64 id per code), got {cfg.bits}")
    if cfg.vocoder.input_channels != cfg.n_mels:
        raise ConfigError(
            f"tadicodec: the vocoder reads the decoded mel, so vocoder.input_channels ({cfg.vocoder.input_channels}) "
            f"must equal n_mels ({cfg.n_mels})"
        )
    if cfg.vocoder_hop_length != cfg.hop_length:
        raise ConfigError(
            f"tadicodec: vocoder_hop_length ({cfg.vocoder_hop_length}) must equal the mel hop_length "
            f"({cfg.hop_length}): one decoded mel frame becomes one hop of audio"
        )
    if cfg.vocoder_padding not in PADDINGS:
        raise ConfigError(f"tadicodec: vocoder_padding must be one of {PADDINGS}, got {cfg.vocoder_padding!r}")
    if cfg.n_fft < cfg.hop_length or (cfg.n_fft - cfg.hop_length) % 2:
        raise ConfigError(
            f"tadicodec: n_fft - hop_length must be even and >= 0 (reflect padding of half of it each side); "
            f"got n_fft {cfg.n_fft}, hop_length {cfg.hop_length}"
        )
    if cfg.sampling_steps < 1:
        raise ConfigError(f"tadicodec: sampling_steps must be >= 1, got {cfg.sampling_steps}")
    if cfg.solver not in flow.SOLVERS:
        raise ConfigError(f"tadicodec: solver must be one of {flow.SOLVERS}, got {cfg.solver!r}")
    if not 0.0 <= cfg.rescale_cfg <= 1.0:
        raise ConfigError(f"tadicodec: rescale_cfg must lie in [0, 1], got {cfg.rescale_cfg}")
    flow.time_grid(1, cfg.schedule)  # raises ConfigError for an unknown schedule name


# -- transformer ---------------------------------------------------------------------------------


def rms_normalize(x: Tensor, eps: float) -> Tensor:
    """x / sqrt(mean(x^2) + eps), the mean taken in float32 (Llama's RMSNorm without its weight)."""
    variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
    return x * torch.rsqrt(variance + eps)


class AdaptiveRMSNorm(nn.Module):
    """RMS normalisation whose scale is predicted from a condition vector (`to_weight`), or none at all.

    The encoder's norms have no condition and no weight; the decoder's scale is `to_weight(step embedding)`.
    """

    def __init__(self, dim: int, eps: float, conditioned: bool) -> None:
        super().__init__()
        self.eps = eps
        self.to_weight = nn.Linear(dim, dim) if conditioned else None
        if self.to_weight is not None:
            nn.init.zeros_(self.to_weight.weight)
            nn.init.ones_(self.to_weight.bias)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        x = rms_normalize(x, self.eps)
        if self.to_weight is None or cond is None:
            return x
        weight = self.to_weight(cond)
        return (weight.unsqueeze(1) if weight.dim() == 2 else weight) * x


class SelfAttention(nn.Module):
    """Non-causal multi-head attention with rotary positions (rotate-half pairing), no biases."""

    def __init__(self, dim: int, heads: int, backend: str | None) -> None:
        super().__init__()
        self.heads = heads
        self.backend = backend
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: MaskSpec | None) -> Tensor:
        b, n, c = x.shape

        def heads(t: Tensor) -> Tensor:
            return t.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

        q = apply_rotary(heads(self.q_proj(x)), cos, sin, interleaved=False)
        k = apply_rotary(heads(self.k_proj(x)), cos, sin, interleaved=False)
        out = attention(q, k, heads(self.v_proj(x)), mask=mask, backend=self.backend)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, c))


class GatedMLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    """Pre-norm Llama layer whose two RMSNorms take their scale from the step embedding."""

    def __init__(self, cfg: TaDiCodecConfig, conditioned: bool) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.self_attn = SelfAttention(d, cfg.num_heads, cfg.attention_backend)
        self.mlp = GatedMLP(d, cfg.intermediate_size)
        self.input_layernorm = AdaptiveRMSNorm(d, cfg.rms_norm_eps, conditioned)
        self.post_attention_layernorm = AdaptiveRMSNorm(d, cfg.rms_norm_eps, conditioned)

    def forward(self, x: Tensor, step: Tensor | None, cos: Tensor, sin: Tensor, mask: MaskSpec | None) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x, step), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x, step))


def _mlp(dim: int, hidden: int) -> nn.Sequential:
    """Linear -> SiLU -> Linear (keys .0 and .2 as upstream's nn.Sequential)."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, dim))


def timestep_features(t: Tensor, dim: int) -> Tensor:
    """[sin, cos] of t times dim/2 frequencies exp(-k ln(10000) / (dim/2 - 1)); t itself, not scaled."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device) * -(math.log(10000.0) / (half - 1)))
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cat([args.sin(), args.cos()], dim=-1)


class FlowTransformer(nn.Module):
    """Upstream's DiffLlamaPrefix: in_linear, optional code condition (cond_mlp, added per frame), optional
    text prefix (text_mlp), optional flow-time embedding (diff_step_mlp) scaling every RMSNorm, non-causal
    Llama layers with RoPE over [prefix, frames], final norm, output taken over the frames only."""

    def __init__(
        self, cfg: TaDiCodecConfig, layers: int, out_dim: int | None, text: bool, time: bool, cond: bool
    ) -> None:
        super().__init__()
        d = cfg.hidden_size
        hidden = 4 * d
        self.theta = cfg.rope_theta
        self.head_dim = d // cfg.num_heads
        self.layers = nn.ModuleList(Layer(cfg, conditioned=cond or time) for _ in range(layers))
        self.norm = AdaptiveRMSNorm(d, cfg.rms_norm_eps, conditioned=cond or time)
        self.text_mlp = _mlp(d, hidden) if text else None
        self.diff_step_mlp = _mlp(d, hidden) if time else None
        self.cond_mlp = _mlp(d, hidden) if cond else None
        self.in_linear = nn.Linear(cfg.n_mels, d)
        self.out_linear = nn.Linear(d, out_dim) if out_dim is not None else None

    def forward(
        self,
        x: Tensor,
        t: Tensor | None = None,
        cond: Tensor | None = None,
        text: Tensor | None = None,
        frames: Tensor | None = None,
    ) -> Tensor:
        """x (B, L, n_mels), t (B,), cond (B, L, hidden), text embeddings (B, Lt, hidden) before text_mlp;
        `frames` (B,) marks valid frames of right-padded rows (padded keys are masked)."""
        h = self.in_linear(x)
        if self.cond_mlp is not None and cond is not None:
            h = h + self.cond_mlp(cond)
        prefix = 0
        if self.text_mlp is not None and text is not None:
            prefix = text.shape[1]
            h = torch.cat([self.text_mlp(text), h], dim=1)
        step = None
        if self.diff_step_mlp is not None and t is not None:
            step = self.diff_step_mlp(timestep_features(t, h.shape[-1]).to(h.dtype))
        positions = torch.arange(h.shape[1], device=h.device, dtype=torch.float32)
        cos, sin = rope_1d(positions, self.head_dim, self.theta, dtype=h.dtype)
        mask = None if frames is None else MaskSpec.key_padding(frames.to(h.device).long() + prefix)
        for layer in self.layers:
            h = layer(h, step, cos, sin, mask)
        h = self.norm(h, step)[:, prefix:]
        return self.out_linear(h) if self.out_linear is not None else h


class Vocoder(nn.Module):
    """Vocos: normalised mel (B, T, n_mels) -> waveform (B, 1, T * hop) (upstream feeds the normalised mel)."""

    def __init__(self, cfg: TaDiCodecConfig) -> None:
        super().__init__()
        self.backbone = VocosBackbone(cfg.vocoder)
        padding = cfg.vocoder_padding
        self.head = ISTFTHead(cfg.vocoder.dim, cfg.vocoder_n_fft, cfg.vocoder_hop_length, padding)  # type: ignore[arg-type]

    def forward(self, mel: Tensor) -> Tensor:
        return self.head(self.backbone(mel.transpose(1, 2))).unsqueeze(1)


# -- tokenizer -----------------------------------------------------------------------------------


class TaDiCodecTokenizer(Tokenizer):
    """TaDiCodec: 24 kHz speech -> 6.25 ids/s (16384 codes); decode needs the transcript (text ids)."""

    family = "tadicodec"
    config_class = TaDiCodecConfig
    modality = "audio"
    parity_cases = ("tadicodec/a",)

    def __init__(self, config: TaDiCodecConfig) -> None:
        super().__init__(config)
        _check_config(config)
        cfg = config
        self.frontend = self._make_frontend()
        self.encoder = FlowTransformer(cfg, cfg.encoder_layers, None, text=False, time=False, cond=False)
        self.vq_in_linear = nn.Linear(cfg.hidden_size, cfg.bits)
        self.quantizer = self._make_quantizer()
        self.vq_out_linear = nn.Linear(cfg.bits, cfg.hidden_size)
        self.text_emb = nn.Embedding(cfg.text_vocab_size, cfg.hidden_size)
        self.decoder = FlowTransformer(cfg, cfg.decoder_layers, cfg.n_mels, text=True, time=True, cond=True)
        self.vocoder = Vocoder(cfg)
        self.text_tokenizer_dir: str | None = None
        self._text_tokenizer: Any = None

    def _make_frontend(self) -> LogMel:
        cfg = self.config
        return LogMel(
            sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels,
            f_min=cfg.f_min, f_max=cfg.f_max, center=False, pad=(cfg.n_fft - cfg.hop_length) // 2,
            drop_last=False, spectrum="magnitude", magnitude_eps=1e-9, log="ln", clamp_min=1e-5,
            dynamic_range=None, mean=cfg.mel_mean, std=math.sqrt(cfg.mel_var),
        )

    def _make_quantizer(self) -> BSQ:
        # upstream's BSQ: the latent is l2-normalised before it; entropy weights 1, no commitment loss
        return BSQ(self.config.bits, normalize=False, entropy_weight=1.0, inv_temperature=1.0, commitment_weight=0.0)

    # -- facts -----------------------------------------------------------------------------------
    @property
    def samples_per_token(self) -> int:
        return self.config.hop_length * self.config.down_sample_factor

    @property
    def spec(self) -> TokenSpec:
        cfg = self.config
        return TokenSpec(
            modality="audio",
            kind="binary",
            codebook_sizes=(2**cfg.bits,),
            bits_per_token=cfg.bits,
            latent_dim=cfg.bits,
            token_rate=cfg.sample_rate / self.samples_per_token,
            downsample=(self.samples_per_token,),
            sample_rate=cfg.sample_rate,
            channels=1,
            can_decode=True,
            decode_needs=("text",),
            stochastic_decode=True,
            export={"encoder": None, "decoder": None},
            notes=(
                "decode needs the transcript: text_ids= (token ids of the published text tokenizer) or text=; "
                "prompt= (speech) is optional. A clip of N samples gives (N // hop) // 8 ids (trailing frames "
                "are not coded unless encode(pad=True)). The decoder graph exports whole (steps unrolled) and as "
                "one velocity step for a runtime-side sampling loop (decoder_module('velocity'))."
            ),
        )

    @property
    def min_samples(self) -> int:
        """Fewest samples that give one code (8 mel frames)."""
        return self.samples_per_token

    def num_frames(self, samples: int) -> int:
        """Mel frames of a clip: 1 + (N + 2 pad - n_fft) // hop (= N // hop for the published sizes)."""
        return int(self.frontend.num_frames(int(samples)))

    def num_tokens(self, samples: int) -> int:
        return self.num_frames(samples) // self.config.down_sample_factor

    # -- tensor paths (exportable) ---------------------------------------------------------------
    def mel(self, audio: Tensor) -> Tensor:
        """Waveform (B, 1, N) or (B, N) -> normalised log-mel (B, T, n_mels), the model's mel space."""
        return self.frontend(audio).transpose(1, 2)

    def encoder_features(self, mel: Tensor, frames: Tensor | None = None) -> Tensor:
        """Normalised mel (B, T, n_mels) -> encoder output (B, T, hidden) (`frames`: valid rows per item)."""
        return self.encoder(mel, frames=frames)

    def downsample(self, features: Tensor) -> Tensor:
        """(B, T, C) -> (B, T // factor, C) by linear interpolation (scale T / (T // factor), as upstream)."""
        size = features.shape[1] // self.config.down_sample_factor
        return F.interpolate(features.transpose(1, 2), size=size, mode="linear").transpose(1, 2)

    def project(self, features: Tensor) -> Tensor:
        """Downsampled features -> the unit-norm latent the BSQ signs are read from (B, n, bits)."""
        return F.normalize(self.vq_in_linear(features), dim=-1)

    def latent(self, mel: Tensor) -> Tensor:
        """Normalised mel (B, T, n_mels) -> latent (B, T // factor, bits)."""
        return self.project(self.downsample(self.encoder_features(mel)))

    def encode_ids(self, x: Tensor) -> Tensor:
        """Waveform (B, 1, N) -> ids (B, (N // hop) // factor); upstream's `encode` on our mel."""
        return self.quantizer.encode(self.latent(self.mel(x)))

    def condition(self, ids: Tensor) -> Tensor:
        """Ids (B, n) -> the decoder's per-frame condition (B, factor * n, hidden)."""
        codes = self.quantizer.decode(ids).to(self.vq_out_linear.weight.dtype)
        up = self.vq_out_linear(codes).transpose(1, 2)
        return F.interpolate(up, scale_factor=float(self.config.down_sample_factor), mode="linear").transpose(1, 2)

    def velocity(self, x: Tensor, t: Tensor, cond: Tensor, text_ids: Tensor) -> Tensor:
        """Conditional velocity: x (B, L, n_mels) = [prompt mel, noisy mel], t (B,), cond (B, L, hidden),
        text_ids (B, Lt) -> (B, L, n_mels) (the caller keeps the frames after the prompt)."""
        return self.decoder(x, t=t, cond=cond, text=self.text_emb(text_ids))

    def velocity_uncond(self, x: Tensor, t: Tensor) -> Tensor:
        """Unconditional velocity (classifier-free guidance): zero code condition, no text prefix."""
        cond = x.new_zeros(x.shape[0], x.shape[1], self.config.hidden_size)
        return self.decoder(x, t=t, cond=cond, text=None)

    def vocode(self, mel: Tensor) -> Tensor:
        """Normalised mel (B, T, n_mels) -> waveform (B, 1, T * hop)."""
        return self.vocoder(mel)

    def decode_mel_ids(self, ids: Tensor, text_ids: Tensor, noise: Tensor | None = None) -> Tensor:
        """Ids (B, n) + text ids (B, Lt) (+ noise (B, factor * n, n_mels)) -> mel with the configured sampler."""
        cfg = self.config
        cond = self.condition(ids)
        if noise is None:
            noise = torch.randn_like(cond[..., : cfg.n_mels])
        guided = cfg.cfg_scale > 0
        return flow.sample(
            lambda x, t: self.velocity(x, t, cond, text_ids),
            noise.to(cond.dtype),
            cfg.sampling_steps,
            schedule=cfg.schedule,
            solver=cfg.solver,
            cfg_scale=cfg.cfg_scale,
            rescale=cfg.rescale_cfg,
            uncond_fn=(lambda x, t: self.velocity_uncond(x, t)) if guided else None,
            rescale_per_sample=True,
        )

    def decode_ids(self, ids: Tensor, text_ids: Tensor, noise: Tensor | None = None) -> Tensor:  # type: ignore[override]
        """Ids (B, n) + text ids (B, Lt) (+ noise) -> waveform (B, 1, factor * n * hop); exportable (the
        configured steps unroll; without `noise` the graph draws it)."""
        return self.vocode(self.decode_mel_ids(ids, text_ids, noise))

    def encoder_module(self) -> nn.Module:
        return _Graph(self, "encode_ids")

    def decoder_module(self, part: str = "full") -> nn.Module:
        """Export wrapper. "full": (ids, text_ids, noise) -> audio, steps unrolled. The parts a runtime loops
        over: "condition" ids -> cond; "velocity" (x, t, cond, text_ids) -> v; "velocity_uncond" (x, t) -> v;
        "vocoder" mel -> audio (see `flow_recipe`)."""
        methods = {
            "full": "decode_ids",
            "condition": "condition",
            "velocity": "velocity",
            "velocity_uncond": "velocity_uncond",
            "vocoder": "vocode",
        }
        if part not in methods:
            raise ConfigError(f"tadicodec decoder_module part must be one of {sorted(methods)}; got {part!r}")
        return _Graph(self, methods[part])

    def flow_recipe(self, steps: int | None = None, cfg_scale: float | None = None) -> dict[str, Any]:
        """How to run decoding around the exported parts without PyTorch.

        cond = condition(ids); x = noise (B, F, n_mels), F = factor * n - P (P prompt frames); for step i:
        t = times[i] + (times[i+1] - times[i]) / 2 (midpoint), full = [prompt, x], c = velocity(full, t, cond,
        text_ids)[:, P:], u = velocity_uncond(full, t)[:, P:], g = u + s (c - u), v = r g std(c) / std(g) +
        (1 - r) g (unbiased std over each item; skip guidance when s <= 0), x += dt v; audio = vocoder(x).
        """
        cfg = self.config
        steps = cfg.sampling_steps if steps is None else int(steps)
        return {
            "times": flow.time_grid(steps, cfg.schedule).tolist(),
            "steps": steps,
            "schedule": cfg.schedule,
            "solver": cfg.solver,
            "cfg_scale": cfg.cfg_scale if cfg_scale is None else float(cfg_scale),
            "rescale": cfg.rescale_cfg,
            "rescale_std": "unbiased, over each item's whole velocity",
            "uncond": "velocity_uncond (zero code condition, no text)",
            "noise_shape": ["batch", "frames", cfg.n_mels],
            "frames_per_id": cfg.down_sample_factor,
            "prompt": "mel frames of the prompt lead the sequence, stay clean and are cut from the velocity",
            "output": "vocoder(mel) -> (batch, 1, frames * hop)",
            "hop_length": cfg.hop_length,
        }

    # -- Tokens API ------------------------------------------------------------------------------
    def encode(
        self,
        x: Any,
        lengths: Sequence[int] | Tensor | None = None,
        prompt: Any = None,
        pad: bool = False,
        sample_rate: int | None = None,
        **kwargs: Any,
    ) -> Tokens:
        """Speech (N,), (1, N) or (B, 1, N) at 24 kHz in [-1, 1] -> Tokens with ids (B, n).

        `lengths` (B,) gives each clip's samples in a right-padded batch; every clip gets the ids it gets
        alone. `prompt`: speech (one clip, or one per item) whose mel frames are put before the clip's, as
        upstream's voice-cloning path does; decode then needs the same prompt and returns the clip only.
        `pad=True` zero-pads each clip to a whole number of codes (upstream drops the tail frames).
        `sample_rate`: the input's rate when it is not 24 kHz (resampled with a warning).
        """
        if kwargs:
            raise InputError(
                f"unknown encode option(s) {sorted(kwargs)}; tadicodec takes lengths=, prompt=, pad= and sample_rate="
            )
        wave = self.prepare(x)
        batch, _, total = wave.shape
        counts = check_lengths(lengths, batch, total)
        if sample_rate is not None and int(sample_rate) != self.config.sample_rate:
            wave, counts = self._resample(wave, counts, sample_rate)
        prompt_mels = None if prompt is None else self._prompt_mels(prompt, batch, "prompt")
        clips = [wave[b, 0, : counts[b]] for b in range(batch)]
        if pad:
            clips = [F.pad(c, (0, -c.shape[-1] % self.samples_per_token)) for c in clips]
        prompt_frames = 0 if prompt_mels is None else prompt_mels.shape[1]
        factor = self.config.down_sample_factor
        short = [i for i, c in enumerate(clips)
                 if c.shape[-1] <= self.frontend.pad or self.num_frames(c.shape[-1]) + prompt_frames < factor]
        if short:
            i = short[0]
            raise InputError(
                f"audio too short: clip {i} has {counts[i]} samples; tadicodec needs at least {self.min_samples} "
                f"({1000 * self.min_samples / self.config.sample_rate:.0f} ms at {self.config.sample_rate} Hz, "
                f"{self.config.down_sample_factor} mel frames = one id). Pad it with silence or pass pad=True."
            )
        with torch.no_grad():
            mels = [self.mel(c[None]) for c in clips]
            if prompt_mels is not None:
                mels = [torch.cat([prompt_mels[min(b, prompt_mels.shape[0] - 1)][None], m], dim=1)
                        for b, m in enumerate(mels)]
            ids, codes = self._ids_of_mels(mels)
        tokens_per_clip = torch.tensor(codes, dtype=torch.long)
        extras = {}
        if prompt_mels is not None:
            extras["prompt_frames"] = torch.full((batch,), prompt_frames, dtype=torch.long)
        return self.make_tokens(
            ids,
            grid=(ids.shape[1],),
            lengths=tokens_per_clip,
            original_size=torch.tensor(counts, dtype=torch.long),
            extras=extras,
            meta={"sample_rate": self.config.sample_rate, "token_rate": self.spec.token_rate, "padded": bool(pad)},
        )

    def _ids_of_mels(self, mels: list[Tensor]) -> tuple[Tensor, list[int]]:
        """Per-clip mels (1, T_b, n_mels) -> ids (B, n_max) (0 past each clip) and codes per clip."""
        factor = self.config.down_sample_factor
        frames = [int(m.shape[1]) for m in mels]
        codes = [f // factor for f in frames]
        longest = max(frames)
        batch = torch.cat([F.pad(m, (0, 0, 0, longest - m.shape[1])) for m in mels])
        ragged = len(set(frames)) > 1
        valid = torch.tensor(frames, dtype=torch.long, device=batch.device) if ragged else None
        features = self.encoder_features(batch, valid)
        latents = [self.project(self.downsample(features[b : b + 1, : frames[b]])) for b in range(len(mels))]
        if len(mels) > 1:
            # batched kernels round differently (~1e-6); a clip with a near-zero latent value, whose sign
            # that rounding could flip, is encoded alone so its ids are exactly its solo ids
            latents = [self.latent(mels[b]) if bool((lat.abs() < TIE_EPS).any()) else lat
                       for b, lat in enumerate(latents)]
        ids = torch.zeros(len(mels), max(codes), dtype=torch.long, device=batch.device)
        for b, lat in enumerate(latents):
            ids[b, : codes[b]] = self.quantizer.encode(lat)[0]
        return ids, codes

    def decode_mel(
        self,
        tokens: Tokens | Tensor,
        text: str | Sequence[str] | None = None,
        text_ids: Any = None,
        prompt: Any = None,
        prompt_mel: Any = None,
        noise: Any = None,
        generator: torch.Generator | None = None,
        steps: int | None = None,
        cfg_scale: float | None = None,
        rescale: float | None = None,
        schedule: str | None = None,
        solver: str | None = None,
        scheduler: Any = None,
        cfg_interval: tuple[float, float] | None = None,
        velocity_fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor] | None = None,
        uncond_velocity_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        text_tokenizer: str | os.PathLike | None = None,
    ) -> tuple[Tensor, list[int]]:
        """Tokens -> decoded normalised mel (B, F_max, n_mels), zero past each item, and frames per item.

        See `decode` for the options.
        """
        ids, codes, _, recorded_prompt = self._read_tokens(tokens)
        batch = ids.shape[0]
        cfg = self.config
        texts = self._text_ids(text, text_ids, batch, text_tokenizer)
        prompts = self._decode_prompts(prompt, prompt_mel, batch, recorded_prompt)
        factor = cfg.down_sample_factor
        frames = [factor * codes[b] - (0 if prompts is None else prompts[b].shape[0]) for b in range(batch)]
        bad = [b for b, f in enumerate(frames) if f < 1]
        if bad:
            b = bad[0]
            lead = factor * codes[b] - frames[b]
            raise InputError(
                f"the prompt ({lead} mel frames) covers all {factor * codes[b]} frames the ids of item "
                f"{b} describe; nothing is left to decode. The ids must cover [prompt, target]: encode the target "
                "with encode(x, prompt=...) or pass a shorter prompt."
            )
        width = max(frames)
        if noise is None:
            noise = flow.draw_noise((batch, width, cfg.n_mels), generator, dtype=self.dtype, device=self.device)
        else:
            noise = self._as_noise(noise, batch, width)
        scale = cfg.cfg_scale if cfg_scale is None else float(cfg_scale)
        weight = cfg.rescale_cfg if rescale is None else float(rescale)
        cond_fn = velocity_fn or self.velocity
        uncond_fn = uncond_velocity_fn or self.velocity_uncond
        out = torch.zeros(batch, width, cfg.n_mels, device=self.device, dtype=self.dtype)
        groups: dict[tuple[int, int, int], list[int]] = {}
        for b in range(batch):
            key = (codes[b], len(texts[b]), 0 if prompts is None else prompts[b].shape[0])
            groups.setdefault(key, []).append(b)
        with torch.no_grad():
            for (count, _, _), rows in groups.items():
                cond = self.condition(ids[rows, :count])
                txt = torch.tensor([texts[b] for b in rows], dtype=torch.long, device=self.device)
                lead = (torch.stack([prompts[b] for b in rows]) if prompts is not None
                        else cond.new_zeros(len(rows), 0, cfg.n_mels))

                def v_cond(x: Tensor, t: Tensor, cond: Tensor = cond, txt: Tensor = txt, lead: Tensor = lead) -> Tensor:
                    return cond_fn(torch.cat([lead, x], dim=1), t, cond, txt)[:, lead.shape[1]:]

                def v_uncond(x: Tensor, t: Tensor, lead: Tensor = lead) -> Tensor:
                    return uncond_fn(torch.cat([lead, x], dim=1), t)[:, lead.shape[1]:]

                mel = flow.sample(
                    v_cond,
                    noise[rows, : frames[rows[0]]],
                    cfg.sampling_steps if steps is None else steps,
                    schedule=schedule or cfg.schedule,
                    solver=solver or cfg.solver,
                    cfg_scale=scale,
                    rescale=weight,
                    scheduler=scheduler,
                    uncond_fn=v_uncond if scale > 0 else None,
                    cfg_interval=cfg_interval,
                    rescale_per_sample=len(rows) > 1,
                )
                out[rows, : mel.shape[1]] = mel.to(out.dtype)
        return out, frames

    def decode(
        self,
        tokens: Tokens | Tensor,
        text: str | Sequence[str] | None = None,
        text_ids: Any = None,
        prompt: Any = None,
        prompt_mel: Any = None,
        noise: Any = None,
        generator: torch.Generator | None = None,
        steps: int | None = None,
        **kwargs: Any,
    ) -> Tensor:
        """Tokens (or ids (B, n)) + transcript -> speech (B, 1, samples) at 24 kHz.

        The decoder is conditioned on the transcript: `text_ids` (token ids of the published text
        tokenizer; (B, Lt), (Lt,), or one sequence per item) or `text` (str or one per item; needs the
        `text_tokenizer/` folder locally, see `TaDiCodecConfig.text_tokenizer`). `prompt` (speech) or
        `prompt_mel` ((B or 1, P, n_mels) normalised mel, e.g. `tok.mel(x)[:, :150]` for upstream's 3 s
        self-prompt) leads the sequence; only the frames after it are returned. `noise` (B, F, n_mels), F the
        longest item's frames to decode (8 per id less the prompt's; shorter items take their first frames;
        `noise_from_upstream` converts upstream's draw), makes decoding exact; otherwise it is drawn from
        `generator`. Sampler options: `steps`, `cfg_scale` (<= 0: no guidance), `rescale`, `schedule`,
        `solver`, `scheduler` (a diffusers flow-matching scheduler), `cfg_interval`; `velocity_fn(x, t,
        cond, text_ids)` / `uncond_velocity_fn(x, t)` replace the decoder (e.g. exported ONNX steps).
        Tokens from `encode` are trimmed to each clip's recorded length; items are zero-padded to the longest.
        """
        allowed = {"cfg_scale", "rescale", "schedule", "solver", "scheduler", "cfg_interval", "velocity_fn",
                   "uncond_velocity_fn", "text_tokenizer"}
        unknown = set(kwargs) - allowed
        if unknown:
            raise InputError(
                f"unknown decode option(s) {sorted(unknown)}; tadicodec takes text=, text_ids=, prompt=, prompt_mel=, "
                f"noise=, generator=, steps= and {', '.join(sorted(allowed))}"
            )
        mel, frames = self.decode_mel(tokens, text, text_ids, prompt, prompt_mel, noise, generator, steps, **kwargs)
        hop = self.config.hop_length
        keep = [f * hop for f in frames]
        _, _, samples, _ = self._read_tokens(tokens)
        if samples is not None:
            keep = [min(k, s) for k, s in zip(keep, samples, strict=True)]
        out = torch.zeros(mel.shape[0], 1, max(keep), device=self.device, dtype=self.dtype)
        with torch.no_grad():
            for count in sorted(set(frames)):
                rows = [b for b in range(mel.shape[0]) if frames[b] == count]
                audio = self.vocode(mel[rows, :count])
                for i, b in enumerate(rows):
                    out[b, :, : keep[b]] = audio[i, :, : keep[b]]
        return out

    def embed(self, ids: Tokens | Tensor) -> Tensor:
        """BSQ code vectors (B, n, bits) of ids, +-1/sqrt(bits) (upstream's `index2vq`)."""
        if isinstance(ids, Tokens):
            ids = ids.ids
        ids = check_ids(torch.as_tensor(ids), 2**self.config.bits).to(self.device)
        return self.quantizer.decode(ids).to(self.dtype)

    def forward(self, x: Tensor) -> dict[str, Any]:
        """Training step on speech (B, 1, N) with upstream's objective, text-free (the transcript is a
        dataset field this model does not see here): BSQ entropy loss and the L1 flow loss on the target
        frames after a random clean prompt, x_t = (1 - (1 - sigma) t) z + t x, target x - (1 - sigma) z."""
        cfg = self.config
        wave = self.prepare(x)
        mel = self.mel(wave)
        frames = mel.shape[1]
        q = self.quantizer(self.latent(mel))
        cond = self.vq_out_linear(q.quantized).transpose(1, 2)
        cond = F.interpolate(cond, size=frames, mode="linear").transpose(1, 2)
        if bool(torch.rand(()) < cfg.cond_drop_p):
            cond = torch.zeros_like(cond)
        t = torch.rand(mel.shape[0], device=mel.device).clamp(1e-5, 1.0)
        z = torch.randn_like(mel)
        target_mask = torch.ones(mel.shape[0], frames, 1, device=mel.device, dtype=mel.dtype)
        if bool(torch.rand(()) > cfg.context_drop_p) and frames >= 5:
            low = min(frames // 4, 5)
            prompt = torch.randint(low, max(int(frames * 0.4), low + 1), (mel.shape[0],), device=mel.device)
            target_mask = (torch.arange(frames, device=mel.device)[None] >= prompt[:, None]).to(mel.dtype)[..., None]
        tt = t[:, None, None]
        x_t = ((1 - (1 - cfg.sigma) * tt) * z + tt * mel) * target_mask + mel * (1 - target_mask)
        v = self.decoder(x_t, t=t, cond=cond, text=None)
        flow_target = mel - (1 - cfg.sigma) * z
        per_frame = (v - flow_target).abs().mean(-1, keepdim=True) * target_mask
        flow_loss = per_frame.sum() / target_mask.sum().clamp(min=1)
        losses = {"flow_l1": flow_loss, **q.losses}
        estimate = x_t + (1 - tt) * v
        return {"ids": q.ids, "mel": mel, "reconstruction": estimate, "losses": losses,
                "loss": sum(losses.values()), "usage": q.usage}

    # -- upstream layouts ------------------------------------------------------------------------
    def tokens_to_upstream(self, tokens: Tokens) -> Tensor:
        """Upstream's `indices` (B, n): the same layout as ours (id = sum bit_j 2^(bits-1-j))."""
        if tokens.ids is None:
            raise InputError("these Tokens hold no ids; tadicodec tokens are ids (B, n)")
        return tokens.ids

    def tokens_from_upstream(self, ids: Any, **kwargs: Any) -> Tokens:
        """Upstream indices (B, n) or (n,) -> Tokens (no recorded length: decode gives factor * n frames)."""
        if kwargs:
            raise InputError(f"unknown option(s) {sorted(kwargs)} for tokens_from_upstream")
        codes = torch.as_tensor(np.asarray(ids) if not isinstance(ids, Tensor) else ids)
        if codes.dim() == 1:
            codes = codes.unsqueeze(0)
        if codes.dim() != 2:
            raise InputError(f"upstream TaDiCodec indices are (B, n) or (n,); got shape {tuple(codes.shape)}")
        codes = check_ids(codes, 2**self.config.bits, what="upstream indices")
        return self.make_tokens(
            codes,
            grid=(codes.shape[1],),
            meta={"sample_rate": self.config.sample_rate, "token_rate": self.spec.token_rate},
        )

    def noise_from_upstream(self, array: Any) -> Tensor:
        """Upstream's `reverse_diffusion` start noise (B, F, n_mels) or (F, n_mels): the same layout as ours."""
        t = _as_float_tensor(array, "noise")
        if t.dim() == 2:
            t = t.unsqueeze(0)
        if t.dim() != 3 or t.shape[-1] != self.config.n_mels:
            raise InputError(
                f"upstream TaDiCodec noise is laid out (B, frames, {self.config.n_mels}); got {tuple(t.shape)}"
            )
        return t.contiguous()

    # -- text ------------------------------------------------------------------------------------
    def tokenize_text(
        self, text: str | Sequence[str], text_tokenizer: str | os.PathLike | None = None
    ) -> list[list[int]]:
        """Transcript(s) -> token ids with the published text tokenizer, as upstream calls it
        (`tokenizer(text, add_special_tokens=False).input_ids`; prompt transcript + text as one string)."""
        texts = [text] if isinstance(text, str) else list(text)
        if not texts or not all(isinstance(s, str) for s in texts):
            raise InputError(f"text must be a string or a list of strings; got {type(text).__name__}")
        encoder = self._load_text_tokenizer(text_tokenizer)
        return [list(encoder(s)) for s in texts]

    def _text_tokenizer_folder(self, explicit: str | os.PathLike | None) -> Path:
        tried: list[str] = []
        for candidate in (explicit, self.text_tokenizer_dir, self.config.text_tokenizer):
            if not candidate:
                continue
            folder = Path(candidate).expanduser()
            for place in (folder, folder / TEXT_TOKENIZER_FOLDER):
                if (place / "tokenizer.json").is_file():
                    return place
            tried.append(str(folder))
            if str(candidate).count("/") == 1 and not folder.exists():
                found = _hub_cached_folder(str(candidate))
                if found is not None:
                    return found
                tried[-1] = f"{candidate} (Hub repo, not in the local Hugging Face cache)"
        raise CheckpointError(
            "decode(text=...) needs the published text tokenizer (text_tokenizer/tokenizer.json) and none was found"
            + (f"; looked in: {', '.join(tried)}" if tried else "")
            + ". Pass text_ids= (token ids) instead, or download the folder (huggingface-cli download "
            "amphion/TaDiCodec --include 'text_tokenizer/*') and pass text_tokenizer=<folder> or set "
            "tok.text_tokenizer_dir."
        )

    def _load_text_tokenizer(self, explicit: str | os.PathLike | None) -> Callable[[str], list[int]]:
        folder = self._text_tokenizer_folder(explicit)
        cached = self._text_tokenizer
        if cached is not None and cached[0] == folder:
            return cached[1]
        try:
            from transformers import AutoTokenizer  # upstream's own loader, when installed

            hf = AutoTokenizer.from_pretrained(str(folder))

            def encode(s: str) -> list[int]:
                return list(hf(s, add_special_tokens=False).input_ids)
        except ImportError:
            try:
                from tokenizers import Tokenizer as FastTokenizer
            except ImportError:
                raise BackendError(
                    "decode(text=...) reads the text tokenizer with `transformers` or `tokenizers`, and neither is "
                    "installed: pip install tokenizers (or pass text_ids=)"
                ) from None
            fast = FastTokenizer.from_file(str(folder / "tokenizer.json"))

            def encode(s: str) -> list[int]:
                return list(fast.encode(s, add_special_tokens=False).ids)

        self._text_tokenizer = (folder, encode)
        return encode

    # -- helpers -----------------------------------------------------------------------------------
    def _read_tokens(self, tokens: Tokens | Tensor) -> tuple[Tensor, list[int], list[int] | None, list[int] | None]:
        """ids on the device, codes per item, recorded samples per item and recorded prompt frames."""
        samples = prompt = counts = None
        if isinstance(tokens, Tokens):
            if tokens.ids is None:
                raise InputError("these Tokens hold no ids; tadicodec decodes ids (B, n) made by its encode()")
            ids = tokens.ids
            counts = tokens.lengths
            if tokens.original_size is not None:
                samples = [int(s) for s in torch.as_tensor(tokens.original_size).reshape(-1)]
            if "prompt_frames" in tokens.extras:
                prompt = [int(p) for p in tokens.extras["prompt_frames"].reshape(-1)]
        else:
            ids = tokens
        ids = torch.as_tensor(ids)
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        if ids.dim() != 2:
            raise InputError(
                f"tadicodec ids must be (B, n) (or (n,)); got shape {tuple(ids.shape)}. One id per 8 mel frames."
            )
        ids = check_ids(ids, 2**self.config.bits).to(self.device)
        batch, width = ids.shape
        codes = [width] * batch if counts is None else [int(c) for c in torch.as_tensor(counts).reshape(-1)]
        if len(codes) != batch or min(codes) < 1 or max(codes) > width:
            raise InputError(f"Tokens.lengths {codes} do not fit ids of shape {tuple(ids.shape)}")
        for name, values in (("original_size", samples), ("prompt_frames", prompt)):
            if values is not None and len(values) != batch:
                raise InputError(f"Tokens.{name} has {len(values)} entries for {batch} items")
        return ids, codes, samples, prompt

    def _text_ids(
        self, text: Any, text_ids: Any, batch: int, text_tokenizer: str | os.PathLike | None
    ) -> list[list[int]]:
        if text is not None and text_ids is not None:
            raise InputError("pass text= or text_ids=, not both")
        if text is None and text_ids is None:
            raise InputError(
                "tadicodec decodes with the transcript: pass text_ids= (token ids of the published text tokenizer, "
                "(B, Lt) or (Lt,)) or text= (needs the text_tokenizer/ folder). With a prompt, the transcript is "
                "prompt text + target text."
            )
        if text is not None:
            rows = self.tokenize_text(text, text_tokenizer)
        elif isinstance(text_ids, Tensor | np.ndarray):
            t = torch.as_tensor(text_ids)
            if t.dtype.is_floating_point or t.dtype == torch.bool or t.dim() not in (1, 2):
                raise InputError(
                    f"text_ids must be integer token ids (B, Lt) or (Lt,); got {tuple(t.shape)} of {t.dtype}"
                )
            rows = [r.tolist() for r in (t[None] if t.dim() == 1 else t)]
        elif isinstance(text_ids, Sequence) and text_ids and all(isinstance(v, int) for v in text_ids):
            rows = [list(text_ids)]
        elif isinstance(text_ids, Sequence):
            rows = [torch.as_tensor(r).reshape(-1).tolist() for r in text_ids]
        else:
            raise InputError(f"text_ids must be a tensor or a list of id sequences; got {type(text_ids).__name__}")
        if len(rows) == 1 and batch > 1:
            rows = rows * batch
        if len(rows) != batch:
            raise InputError(f"got {len(rows)} transcripts for {batch} token sequences; give one per item (or one)")
        vocab = self.config.text_vocab_size
        for i, r in enumerate(rows):
            if not r:
                raise InputError(f"transcript {i} is empty; tadicodec's decoder needs at least one text token")
            if not all(isinstance(v, int) for v in r) or min(r) < 0 or max(r) >= vocab:
                raise InputError(f"text ids of item {i} must be integers in [0, {vocab - 1}]; got {r[:8]}...")
        return rows

    def _prompt_mels(self, prompt: Any, batch: int, what: str) -> Tensor:
        """Prompt speech (one clip or one per item, all of one length) -> normalised mel (1 or B, P, n_mels)."""
        wave = self.prepare(prompt)
        if wave.shape[0] not in (1, batch):
            raise InputError(f"{what} has {wave.shape[0]} clips for {batch} items; pass one clip or one per item")
        if wave.shape[-1] <= self.frontend.pad:
            raise InputError(
                f"{what} has {wave.shape[-1]} samples; its mel needs more than {self.frontend.pad} (reflect padding)"
            )
        with torch.no_grad():
            return self.mel(wave)

    def _decode_prompts(
        self, prompt: Any, prompt_mel: Any, batch: int, recorded: list[int] | None
    ) -> list[Tensor] | None:
        if prompt is not None and prompt_mel is not None:
            raise InputError("pass prompt= (speech) or prompt_mel= (normalised mel frames), not both")
        if prompt is not None:
            mels = self._prompt_mels(prompt, batch, "prompt")
        elif prompt_mel is not None:
            mels = _as_float_tensor(prompt_mel, "prompt_mel")
            if mels.dim() == 2:
                mels = mels.unsqueeze(0)
            if mels.dim() != 3 or mels.shape[-1] != self.config.n_mels or mels.shape[0] not in (1, batch):
                raise InputError(
                    f"prompt_mel must be normalised mel frames (1 or {batch}, P, {self.config.n_mels}) (tok.mel(x)); "
                    f"got {tuple(mels.shape)}"
                )
            if not bool(torch.isfinite(mels).all()):
                raise InputError("prompt_mel contains NaN or Inf values")
            mels = mels.to(device=self.device, dtype=self.dtype)
        else:
            if recorded is not None and max(recorded) > 0:
                raise InputError(
                    f"these tokens were encoded after a prompt of {recorded[0]} mel frames (encode(x, prompt=...)); "
                    "pass the same prompt= to decode"
                )
            return None
        rows = [mels[min(b, mels.shape[0] - 1)] for b in range(batch)]
        if recorded is not None:
            wrong = [b for b in range(batch) if rows[b].shape[0] != recorded[b]]
            if wrong:
                b = wrong[0]
                raise InputError(
                    f"the prompt has {rows[b].shape[0]} mel frames but item {b} was encoded after {recorded[b]}; "
                    "pass the prompt the tokens were encoded with"
                )
        return rows

    def _as_noise(self, noise: Any, batch: int, width: int) -> Tensor:
        t = self.noise_from_upstream(noise)
        if t.shape[0] != batch or t.shape[1] < width:
            raise InputError(
                f"decoder noise must be (B, frames, n_mels) = ({batch}, {width}, {self.config.n_mels}) (frames: "
                f"{self.config.down_sample_factor} per id, less the prompt's); got {tuple(t.shape)}"
            )
        if not bool(torch.isfinite(t).all()):
            raise InputError("decoder noise contains NaN or Inf values")
        return t.to(device=self.device, dtype=self.dtype)

    def _resample(self, wave: Tensor, counts: list[int], rate: int) -> tuple[Tensor, list[int]]:
        return resample_clips(wave, counts, rate, self.config.sample_rate, "tadicodec")


def _hub_cached_folder(repo: str) -> Path | None:
    """The repo's text_tokenizer/ folder in the local Hugging Face cache, or None (nothing is downloaded)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return None
    found = try_to_load_from_cache(
        repo, f"{TEXT_TOKENIZER_FOLDER}/tokenizer.json", cache_dir=os.environ.get("HF_HUB_CACHE")
    )
    return Path(found).parent if isinstance(found, str) else None


def _as_float_tensor(x: Any, what: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise InputError(f"{what} must be a torch.Tensor or numpy array; got {type(x).__name__}")
    if not x.is_floating_point():
        raise InputError(f"{what} must be floating point; got {x.dtype}")
    return x


class _Graph(nn.Module):
    """One tensor method of the tokenizer as a module (what torch.onnx.export takes)."""

    def __init__(self, tokenizer: TaDiCodecTokenizer, method: str) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.method = method
        self.training = tokenizer.training

    def forward(self, *args: Tensor) -> Tensor:
        return getattr(self.tokenizer, self.method)(*args)


# -- converter -----------------------------------------------------------------------------------

# Keys upstream files may hold that this model does not use (loaded with strict=False upstream).
_UNUSED = (
    "repa_mlp.",  # REPA alignment head (training only, use_repa_loss)
    "encoder.embed_tokens.",  # LlamaModel's token embedding, set to None upstream
    "decoder.embed_tokens.",
    "encoder.rotary_emb.",  # rotary inv_freq buffers that older transformers saved
    "decoder.rotary_emb.",
    "vocoder.feature_extractor.",  # a Vocos training module's mel front end
)
_UNUSED_INFIX = (".self_attn.rotary_emb.inv_freq",)


def config_from_upstream(upstream_config: Any) -> dict[str, Any]:
    """Our config fields from upstream's config (the egs JSON / the Hub config.json, or its `model` part)."""
    if upstream_config is None:
        return {}
    cfg = _plain(upstream_config)
    if not isinstance(cfg, dict):
        raise ConfigError(f"tadicodec upstream config must be a mapping (config.json), got {type(cfg).__name__}")
    model = cfg.get("model", cfg)
    codec = model.get("tadicodec", {}) if isinstance(model, dict) else {}
    vocos = model.get("vocos", {}) if isinstance(model, dict) else {}
    pre = cfg.get("preprocess", {})
    infer = cfg.get("inference", {})
    out: dict[str, Any] = {}

    def take(section: dict[str, Any], key: str, ours: str, cast: Callable[[Any], Any]) -> None:
        if key in section and section[key] is not None:
            out[ours] = cast(section[key])

    for key, ours, cast in (
        ("sample_rate", "sample_rate", int), ("n_fft", "n_fft", int), ("hop_size", "hop_length", int),
        ("num_mels", "n_mels", int), ("fmin", "f_min", float), ("fmax", "f_max", float),
        ("mel_mean", "mel_mean", float), ("mel_var", "mel_var", float),
    ):
        take(pre, key, ours, cast)
    if "win_size" in pre and "n_fft" in pre and int(pre["win_size"]) != int(pre["n_fft"]):
        raise ConfigError(f"tadicodec: win_size {pre['win_size']} != n_fft {pre['n_fft']}; only full windows are built")
    for key, ours, cast in (
        ("hidden_size", "hidden_size", int), ("encoder_num_layers", "encoder_layers", int),
        ("decoder_num_layers", "decoder_layers", int), ("num_heads", "num_heads", int),
        ("down_sample_factor", "down_sample_factor", int), ("vq_emb_dim", "bits", int),
        ("text_vocab_size", "text_vocab_size", int), ("sigma", "sigma", float),
        ("cond_drop_p", "cond_drop_p", float), ("context_drop_p", "context_drop_p", float),
    ):
        take(codec, key, ours, cast)
    if "hidden_size" in out:
        out["intermediate_size"] = 4 * out["hidden_size"]  # upstream ties the MLP width to 4 x hidden
    required = {"use_text_cond": True, "use_vq": True, "vq_type": "bsq", "cond_scale_factor": 1,
                "time_scheduler": "linear"}
    for key, wanted in required.items():
        if key in codec and codec[key] != wanted:
            raise ConfigError(
                f"tadicodec: the upstream config sets {key}={codec[key]!r}; the published architecture (and this "
                f"family) uses {key}={wanted!r}"
            )
    mel_dim = out.get("n_mels")
    for key in ("mel_dim", "in_dim"):
        if key in codec:
            if mel_dim is not None and int(codec[key]) != mel_dim:
                raise ConfigError(f"tadicodec: model {key} {codec[key]} differs from preprocess num_mels {mel_dim}")
            out.setdefault("n_mels", int(codec[key]))
    if "cond_dim" in codec and "hidden_size" in codec and int(codec["cond_dim"]) != int(codec["hidden_size"]):
        raise ConfigError("tadicodec: cond_dim must equal hidden_size (the code condition is added to the frames)")
    vocoder: dict[str, Any] = {}
    for key in ("input_channels", "dim", "intermediate_dim", "num_layers"):
        if key in vocos:
            vocoder[key] = int(vocos[key])
    if vocos.get("adanorm_num_embeddings") is not None:
        vocoder["adanorm_num_embeddings"] = int(vocos["adanorm_num_embeddings"])
    if vocoder:
        out["vocoder"] = vocoder
    take(vocos, "n_fft", "vocoder_n_fft", int)
    take(vocos, "hop_size", "vocoder_hop_length", int)
    take(vocos, "padding", "vocoder_padding", str)
    take(infer, "n_timesteps", "sampling_steps", int)
    take(infer, "cfg_scale", "cfg_scale", float)
    take(infer, "rescale_cfg", "rescale_cfg", float)
    return out


def _plain(node: Any) -> Any:
    if hasattr(node, "to_dict"):
        node = node.to_dict()
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(node, DictConfig | ListConfig):
            return OmegaConf.to_container(node, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if hasattr(node, "items") and not isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    return node


def _check_bsq_buffers(state: dict[str, Tensor], bits: int) -> None:
    """Upstream's BSQ stores its place values; ours are rebuilt, so the stored ones must be the msb-first order."""
    basis = state.pop("bsq.basis", None)
    group = state.pop("bsq.group_basis", None)
    state.pop("bsq.group_codebook", None)
    if basis is not None:
        want = 2 ** torch.arange(bits - 1, -1, -1)
        if tuple(basis.shape) != (bits,) or not torch.equal(basis.long(), want):
            raise CheckpointError(
                f"tadicodec: bsq.basis is {basis.tolist()}, expected the msb-first place values {want.tolist()} "
                f"of {bits} bits; these ids would be read in another bit order"
            )
    if group is not None and not torch.equal(group.reshape(-1).long(), torch.ones(1, dtype=torch.long)):
        raise CheckpointError(f"tadicodec: bsq.group_basis is {group.tolist()}, expected [1] (group size 1)")


def convert_tadicodec(
    state_dict: dict[str, Tensor],
    upstream_config: Any = None,
    drop_prefixes: tuple[str, ...] = (),
    **overrides: Any,
) -> TaDiCodecTokenizer:
    """Upstream TaDiCodec + Vocos weights -> `TaDiCodecTokenizer`.

    `state_dict`: the TaDiCodec state dict (model.safetensors) merged with the vocoder's under the prefix
    `vocoder.` (the variant YAML downloads both that way); a dict holding it under `state_dict`/`model`
    is unwrapped. Keys upstream keeps but this model does not use (REPA head, BSQ place values, rotary
    caches) are dropped; any other unmapped key is an error naming it (pass `drop_prefixes=` for extras you
    have checked). `upstream_config`: upstream's config (egs JSON / Hub config.json). `overrides` set our
    config fields (e.g. sampling_steps=16).
    """
    from registry.config import model_config

    for container in ("state_dict", "model"):
        if isinstance(state_dict.get(container), dict):
            state_dict = state_dict[container]
    state = dict(state_dict)
    given = config_from_upstream(upstream_config)
    config = model_config(TaDiCodecConfig, given, overrides, where="tadicodec converter")
    if not any(k.startswith("vocoder.") for k in state):
        raise CheckpointError(
            "tadicodec: no vocoder weights (keys 'vocoder.*'); merge the vocoder/ folder's state dict under the "
            "prefix 'vocoder.' (registry.pretrained does so for the registered variant)"
        )
    _check_bsq_buffers(state, config.bits)
    for key in [k for k in state if k.startswith(_UNUSED + tuple(drop_prefixes)) or k.endswith(_UNUSED_INFIX)]:
        del state[key]
    ours: dict[str, Tensor] = {}
    for key in list(state):
        value = state.pop(key)
        ours[key] = value.float() if value.is_floating_point() else value
    with torch.device("meta"):
        tok = TaDiCodecTokenizer(config)
    load_state_strict(tok, ours, "tadicodec upstream checkpoint", assign=True)
    _rebuild_buffers(tok)
    tok.eval()
    return tok


def _rebuild_buffers(tok: TaDiCodecTokenizer) -> None:
    """Non-persistent buffers built on the meta device (mel basis, BSQ place values, iSTFT bases), on the CPU."""
    tok.frontend = tok._make_frontend()
    tok.quantizer = tok._make_quantizer()
    istft = tok.vocoder.head.istft
    istft.bases = irfft_bases(istft.n_fft).to(torch.float32)


register_tokenizer(TaDiCodecTokenizer, variants=("tadicodec-24khz", "tadicodec-tiny"))
register_converter("tadicodec", convert_tadicodec)
