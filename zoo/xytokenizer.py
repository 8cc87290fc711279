"""XY-Tokenizer (Gong et al. 2025, arXiv 2506.23325): 16 kHz speech <-> 8 x 1024 RVQ ids at 12.5 Hz (1 kbps).

Encoder: Whisper-style log-mel (80 bins, hop 160) feeds two Whisper-small-shaped encoders (conv stem k3 /
k3 stride 2, 12 pre-LN blocks; `zoo.layers.whisper`): a semantic one followed by a 4-block adapter and an
acoustic one. Their 50 Hz outputs are concatenated (1536), mixed by a 4-block pre-RVQ transformer, folded
x4 in time (gated convolutions, 3072 channels, 12.5 Hz) and quantised by a weight-normed 3072 -> 512
projection and an 8-stage Euclidean RVQ of 1024 codes (`zoo.layers.quantize.ResidualVQ`). Decoder: the
codes' sum, 512 -> 3072, a 4-block post-RVQ transformer, a x4 transposed conv, a 12-block transformer and
two transposed convs to an 80-bin mel at 100 Hz, and Vocos (30 ConvNeXt blocks, `zoo.layers.vocos`) with
an ISTFT head (`zoo.layers.spectral`): 1280 samples per code at 16 kHz (1920 at 24 kHz for TTSD-V0).

Why we skip the 30-second padding. Upstream zero-pads every chunk to 30 s before the front end, runs
both encoders on all 3000 mel frames and masks attention to the valid ones. Only two things see the
padding: the mel (frames near the end of the clip read zeros, and the clip's floor is its peak - 8 over
all frames, where silent frames are -10 and never the peak) and the conv stem (the last valid conv2
output reads conv1 frame L - 1, which reads mel frame L, one past the L = ceil(N / 160) valid ones).
Everything after the stem is per frame or attends over valid keys only, and the time folding reads
whole groups of 4 valid frames. So we compute the mel of the zero-padded clip up to frame L + 1 (audio
plus zeros up to (L + 1) * 160 + 200 samples, capped at 30 s where upstream's own end reflection then
applies), feed frames 0..L to the stem, keep its first L // 2 outputs and run everything else on them:
upstream's values to float rounding, on a tenth of the frames for a 3 s clip (`bench/xytokenizer.py`).
`encode_ids_padded` is the faithful 30 s computation, kept as a reference.

Ids: ours (B, T, 8) (codebook axis last, coarse first), T = samples // 1280 (the tail is dropped, as
upstream does); upstream's `encode` returns per clip (nq, T) and `inference_tokenize` (nq, B, T)
(`tokens_to_upstream` / `tokens_from_upstream` convert). Decoding gives 1280 * T samples (16 kHz) per
clip, as upstream; it does not pad back to the input length.

Long audio follows upstream exactly: windows of 30 s start every 20 s; window k supplies codes
[250 k, 250 k + 250) and the last window the rest (for 20-30 s clips that is a second, shorter window).
Decoding likewise runs windows of 375 codes every 250 codes and keeps each window's first 250 codes of
audio. Batches: `encode(x, lengths=...)` gives every clip its solo ids (the rare clip whose nearest
codes are within 1e-4 of a tie after batching is re-encoded alone); `decode` groups clips and windows by
length, since the vocoder's convolutions would read a shorter clip's padding.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from registry import register_converter, register_tokenizer
from registry.checkpoint import load_state_strict
from registry.config import plain_config
from registry.errors import CheckpointError, ConfigError, InputError, UnsupportedError
from zoo.audio_batch import check_lengths, resample_clips
from zoo.layers.attention import MaskSpec
from zoo.layers.mel import LogMel
from zoo.layers.quantize import ResidualVQ
from zoo.layers.spectral import InverseSTFT, ISTFTHead
from zoo.layers.vocos import VocosBackbone, VocosBackboneConfig
from zoo.layers.whisper import LayerNorm32, WhisperBlock, WhisperEncoder, frame_mask, sinusoids
from zoo.spec import TokenSpec
from zoo.tokenizer import Tokenizer, check_ids, is_exporting
from zoo.tokens import Tokens

TIE_GAP = 1e-4  # relative distance gap below which a batched id is re-checked alone


@dataclass
class XYTokenizerConfig:
    """Hyperparameters; defaults are the published XY-Tokenizer (`fdugyt/XY_Tokenizer`)."""

    sample_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 80
    dim: int = 768
    heads: int = 12
    mlp_ratio: int = 4
    encoder_layers: int = 12  # each of the semantic and acoustic encoders
    semantic_adapter_layers: int = 4
    pre_rvq_layers: int = 4
    post_rvq_layers: int = 4
    decoder_layers: int = 12
    stride: int = 2  # conv stem stride (100 -> 50 Hz) and the decoder's first transposed conv
    downsample: int = 4  # time folding before the RVQ (50 -> 12.5 Hz)
    max_positions: int = 1500  # rows of the encoders', adapters' and decoder's positional tables
    post_rvq_max_positions: int = 375
    rvq_dim: int = 512
    num_quantizers: int = 8
    codebook_size: int = 1024
    vocos_dim: int = 512
    vocos_intermediate_dim: int = 4096
    vocos_layers: int = 30
    vocos_n_fft: int = 640
    vocos_hop_length: int = 160  # 240 for the 24 kHz vocoder of TTSD-V0
    window_seconds: int = 30
    overlap_seconds: int = 10
    max_windows_per_pass: int = 4  # windows encoded/decoded together (bounds memory on long audio)
    # RVQ training, as upstream: k-means init, EMA updates, dead-code restart, commitment loss.
    kmeans_init: bool = True
    kmeans_iters: int = 10
    ema_decay: float = 0.99
    threshold_dead: float = 2.0
    commitment_weight: float = 1.0


def _zero_past(x: Tensor, lengths: Tensor | None) -> Tensor:
    """(B, T, C) with frames at or past each row's length set to 0 (upstream's output mask)."""
    if lengths is None:
        return x
    return x * frame_mask(lengths, x.shape[1])[:, :, None].to(x.dtype)


def _blocks(dim: int, heads: int, mlp_ratio: int, layers: int) -> nn.ModuleList:
    return nn.ModuleList(WhisperBlock(dim, heads, mlp_ratio=mlp_ratio) for _ in range(layers))


def _run_blocks(blocks: nn.ModuleList, x: Tensor, lengths: Tensor | None) -> Tensor:
    mask = None if lengths is None else MaskSpec.key_padding(lengths)
    for block in blocks:
        x = block(x, mask=mask)
    return x


class XYTransformer(nn.Module):
    """Upstream's `Transformer` adapter: [Linear in], + positional table, pre-LN blocks, LayerNorm, [Linear out].

    Channels last, (B, T, input_dim) -> (B, T, output_dim); frames past `lengths` are zeroed before
    the output projection, as upstream.
    """

    def __init__(
        self, input_dim: int, dim: int, output_dim: int, heads: int, mlp_ratio: int, layers: int, max_positions: int
    ) -> None:
        super().__init__()
        self.proj = nn.Linear(input_dim, dim) if input_dim != dim else None
        self.register_buffer("positional_embedding", sinusoids(max_positions, dim))
        self.blocks = _blocks(dim, heads, mlp_ratio, layers)
        self.ln_post = LayerNorm32(dim)
        self.out_proj = nn.Linear(dim, output_dim) if output_dim != dim else None

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        if self.proj is not None:
            x = self.proj(x)
        x = x + self.positional_embedding[: x.shape[1]].to(x.dtype)
        x = _zero_past(self.ln_post(_run_blocks(self.blocks, x, lengths)), lengths)
        return self.out_proj(x) if self.out_proj is not None else x


class DownConv(nn.Module):
    """Upstream's `ResidualDownConv`: LayerNorm(down(silu(gate) * up) + the `factor` frames side by side).

    (B, T, dim) -> (B, T // factor, dim * factor); a trailing partial group is dropped (upstream pads
    it, but never has one).
    """

    def __init__(self, dim: int, factor: int) -> None:
        super().__init__()
        self.factor = factor
        width = dim * factor
        self.gate_proj = nn.Conv1d(dim, width, factor, factor, bias=False)
        self.up_proj = nn.Conv1d(dim, width, factor, factor, bias=False)
        self.down_proj = nn.Linear(width, width, bias=False)
        self.layer_norm = nn.LayerNorm(width)

    def forward(self, x: Tensor) -> Tensor:
        steps = x.shape[1] // self.factor
        x = x[:, : steps * self.factor]
        xt = x.transpose(1, 2)
        gate = self.gate_proj(xt).transpose(1, 2)
        up = self.up_proj(xt).transpose(1, 2)
        return self.layer_norm(self.down_proj(F.silu(gate) * up) + x.reshape(x.shape[0], steps, -1))


class MelDecoder(nn.Module):
    """Upstream's `OmniAudioDecoder`: + positions, pre-LN blocks, LayerNorm, two GELU transposed convs to mel.

    (B, T, dim) at 50 Hz -> (B, n_mels, stride * T) at 100 Hz.
    """

    def __init__(
        self, dim: int, heads: int, mlp_ratio: int, layers: int, n_mels: int, stride: int, max_positions: int
    ) -> None:
        super().__init__()
        self.stride = stride
        self.register_buffer("positional_embedding", sinusoids(max_positions, dim))
        self.blocks = _blocks(dim, heads, mlp_ratio, layers)
        self.ln_post = LayerNorm32(dim)
        self.deconv1 = nn.ConvTranspose1d(dim, dim, 3, stride=stride)
        self.deconv2 = nn.ConvTranspose1d(dim, n_mels, 3, stride=1)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        steps = x.shape[1]
        x = x + self.positional_embedding[:steps].to(x.dtype)
        x = _zero_past(self.ln_post(_run_blocks(self.blocks, x, lengths)), lengths)
        mel = F.gelu(self.deconv2(F.gelu(self.deconv1(x.transpose(1, 2)))))
        return mel[..., : steps * self.stride]


class Vocoder(nn.Module):
    """Upstream's `Vocos`: ConvNeXt backbone, then the ISTFT head; mel (B, n_mels, T) -> audio (B, 1, T * hop)."""

    def __init__(self, cfg: XYTokenizerConfig) -> None:
        super().__init__()
        self.backbone = VocosBackbone(
            VocosBackboneConfig(
                input_channels=cfg.n_mels,
                dim=cfg.vocos_dim,
                intermediate_dim=cfg.vocos_intermediate_dim,
                num_layers=cfg.vocos_layers,
                adanorm_num_embeddings=None,
                pos_net=False,
            )
        )
        self.head = ISTFTHead(cfg.vocos_dim, cfg.vocos_n_fft, cfg.vocos_hop_length, padding="same")

    def forward(self, mel: Tensor) -> Tensor:
        return self.head(self.backbone(mel)).unsqueeze(1)


def _encoder_states(encoder: WhisperEncoder, mel: Tensor, lengths: Tensor | None, keep: Any) -> Tensor:
    """Upstream's `OmniAudioEncoder` on the first `keep` stem outputs: (B, n_mels, F) -> (B, keep, dim)."""
    x, _ = encoder.stem(mel, None)
    x = x[:, :keep]
    x = x + encoder.positional_embedding[: x.shape[1]].to(x.dtype)
    x = _run_blocks(encoder.blocks, x, lengths)
    assert encoder.ln_post is not None
    return _zero_past(encoder.ln_post(x), lengths)


def _sym_min(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int):
        return min(a, b)
    return torch.sym_min(a, b)


class XYTokenizer(Tokenizer):
    """XY-Tokenizer: 16 kHz mono speech (B, 1, N) -> ids (B, N // 1280, 8), and back (see the module docstring)."""

    family = "xytokenizer"
    config_class = XYTokenizerConfig
    parity_cases = ("xytokenizer/a",)  # ../shared/parity/xytokenizer/a: the xytokenizer-emilia checkpoint layout

    def __init__(self, config: XYTokenizerConfig) -> None:
        super().__init__(config)
        cfg = config
        self._check_config(cfg)
        self.frontend = self._make_frontend()
        width = cfg.dim * cfg.downsample

        def encoder() -> WhisperEncoder:
            return WhisperEncoder(
                cfg.n_mels, cfg.dim, cfg.heads, cfg.encoder_layers, strides=(1, cfg.stride), positions="table",
                max_positions=cfg.max_positions, mlp_ratio=cfg.mlp_ratio, final_norm=True,
                mask_conv_inputs=False, zero_padding_output=True,
            )

        def adapter(input_dim: int, output_dim: int, layers: int, positions: int) -> XYTransformer:
            return XYTransformer(input_dim, cfg.dim, output_dim, cfg.heads, cfg.mlp_ratio, layers, positions)

        self.semantic_encoder = encoder()
        self.semantic_adapter = adapter(cfg.dim, cfg.dim, cfg.semantic_adapter_layers, cfg.max_positions)
        self.acoustic_encoder = encoder()
        self.pre_rvq_adapter = adapter(2 * cfg.dim, cfg.dim, cfg.pre_rvq_layers, cfg.max_positions)
        self.downsample = DownConv(cfg.dim, cfg.downsample)
        self.quantizer_in = nn.Linear(width, cfg.rvq_dim)
        self.quantizer = ResidualVQ(
            cfg.num_quantizers,
            cfg.codebook_size,
            cfg.rvq_dim,
            metric="euclidean",
            ema_decay=cfg.ema_decay,
            kmeans_init=cfg.kmeans_init,
            kmeans_iters=cfg.kmeans_iters,
            threshold_dead=cfg.threshold_dead,
            commitment_weight=cfg.commitment_weight,
        )
        self.quantizer_out = nn.Linear(cfg.rvq_dim, width)
        self.post_rvq_adapter = adapter(width, width, cfg.post_rvq_layers, cfg.post_rvq_max_positions)
        self.upsample = nn.ConvTranspose1d(width, cfg.dim, cfg.downsample, cfg.downsample, bias=False)
        self.acoustic_decoder = MelDecoder(
            cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.decoder_layers, cfg.n_mels, cfg.stride, cfg.max_positions
        )
        self.vocoder = Vocoder(cfg)

    @staticmethod
    def _check_config(cfg: XYTokenizerConfig) -> None:
        if cfg.dim % cfg.heads:
            raise ConfigError(f"dim ({cfg.dim}) must be divisible by heads ({cfg.heads})")
        if cfg.window_seconds <= cfg.overlap_seconds or cfg.overlap_seconds < 0:
            raise ConfigError(
                f"need 0 <= overlap_seconds < window_seconds; got {cfg.overlap_seconds} and {cfg.window_seconds}"
            )
        window_frames = cfg.window_seconds * cfg.sample_rate // cfg.hop_length
        if cfg.max_positions < window_frames // cfg.stride:
            raise ConfigError(
                f"a {cfg.window_seconds} s window has {window_frames // cfg.stride} encoder frames but the positional "
                f"tables have {cfg.max_positions} rows; raise max_positions or shorten window_seconds"
            )
        window_tokens = cfg.window_seconds * cfg.sample_rate // (cfg.hop_length * cfg.stride * cfg.downsample)
        if cfg.post_rvq_max_positions < window_tokens:
            raise ConfigError(
                f"a {cfg.window_seconds} s window has {window_tokens} codes but post_rvq_max_positions is "
                f"{cfg.post_rvq_max_positions}"
            )
        if (cfg.sample_rate * cfg.vocos_hop_length) % cfg.hop_length:
            raise ConfigError(
                f"the vocoder hop {cfg.vocos_hop_length} gives a fractional output rate "
                f"({cfg.sample_rate} * {cfg.vocos_hop_length} / {cfg.hop_length} Hz)"
            )

    def _make_frontend(self) -> LogMel:
        cfg = self.config
        return LogMel(sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels)

    # -- facts -------------------------------------------------------------------------------------
    @property
    def samples_per_token(self) -> int:
        cfg = self.config
        return cfg.hop_length * cfg.stride * cfg.downsample

    @property
    def output_samples_per_token(self) -> int:
        cfg = self.config
        return cfg.vocos_hop_length * cfg.stride * cfg.downsample

    @property
    def output_sample_rate(self) -> int:
        """Rate of decoded audio: 16 kHz for the published model, 24 kHz for TTSD-V0's vocoder."""
        cfg = self.config
        return cfg.sample_rate * cfg.vocos_hop_length // cfg.hop_length

    @property
    def window_samples(self) -> int:
        return self.config.window_seconds * self.config.sample_rate

    @property
    def window_tokens(self) -> int:
        return self.window_samples // self.samples_per_token

    @property
    def keep_tokens(self) -> int:
        """Codes each window supplies before the next one takes over (250: 20 s)."""
        cfg = self.config
        return (cfg.window_seconds - cfg.overlap_seconds) * cfg.sample_rate // self.samples_per_token

    @property
    def spec(self) -> TokenSpec:
        cfg = self.config
        return TokenSpec(
            modality="audio",
            kind="discrete",
            codebook_sizes=(cfg.codebook_size,) * cfg.num_quantizers,
            latent_dim=cfg.dim * cfg.downsample,
            token_rate=cfg.sample_rate / self.samples_per_token,
            downsample=(self.samples_per_token,),
            sample_rate=cfg.sample_rate,
            channels=1,
            can_decode=True,
            notes=(
                f"ids (B, T, {cfg.num_quantizers}) with T = samples // {self.samples_per_token}; decode gives "
                f"{self.output_samples_per_token} samples per code at {self.output_sample_rate} Hz. The exported "
                f"graphs cover one window: the encoder up to {cfg.window_seconds} s (upstream's ids up to "
                f"{cfg.window_seconds - cfg.overlap_seconds} s, where its second window starts), the decoder "
                f"{self.window_tokens} codes; encode() and decode() do the windowing."
            ),
        )

    def num_tokens(self, num_samples: int) -> int:
        return int(num_samples) // self.samples_per_token

    # -- encoder pieces ----------------------------------------------------------------------------
    def log_mel(self, wave: Tensor, padded: bool = False) -> Tensor:
        """Zero-padded clips (B, N) -> upstream's log-mel frames (B, n_mels, F).

        `padded=False`: frames 0..L (L = ceil(N / hop), and F = min(L + 1, window frames)), the only
        ones the valid encoder outputs read, computed from just enough zero padding. `padded=True`:
        all frames of the 30 s window, as upstream computes them.
        """
        cfg = self.config
        samples = wave.shape[-1]
        if padded:
            return self.frontend(F.pad(wave, (0, self.window_samples - samples)))
        frames = (samples + cfg.hop_length - 1) // cfg.hop_length
        needed = _sym_min(self.window_samples, (frames + 1) * cfg.hop_length + cfg.n_fft // 2)
        mel = self.frontend(F.pad(wave, (0, needed - samples)))
        return mel[..., : frames + 1]

    def _encode_mel(self, mel: Tensor, mel_lengths: Tensor | None, keep: Any) -> Tensor:
        """Log-mel -> quantizer input (B, keep // downsample, dim * downsample) from the first `keep` 50 Hz frames."""
        lengths = None if mel_lengths is None else mel_lengths // self.config.stride
        semantic = _encoder_states(self.semantic_encoder, mel, lengths, keep)
        semantic = self.semantic_adapter(semantic, lengths)
        acoustic = _encoder_states(self.acoustic_encoder, mel, lengths, keep)
        mixed = self.pre_rvq_adapter(torch.cat([semantic, acoustic], dim=-1), lengths)
        return self.downsample(mixed)

    def latent(self, x: Tensor, padded: bool = False) -> Tensor:
        """Audio (B, 1, N), N <= one window -> quantizer input (B, T', 3072) (upstream's `downsample` output).

        T' = (ceil(N / 160) // 2) // 4 here; with `padded=True` all 375 frames of the 30 s window.
        """
        wave = x[:, 0] if x.dim() == 3 else x
        frames = (wave.shape[-1] + self.config.hop_length - 1) // self.config.hop_length
        if padded:
            lengths = torch.full((wave.shape[0],), frames, dtype=torch.long, device=wave.device)
            mel = self.log_mel(wave, padded=True)
            return self._encode_mel(mel, lengths, mel.shape[-1])
        return self._encode_mel(self.log_mel(wave), None, frames // self.config.stride)

    # -- tensor paths (exported) -------------------------------------------------------------------
    def encode_ids(self, x: Tensor) -> Tensor:
        """Audio (B, 1, N) -> ids (B, N // 1280, n_q).

        Exported, this is one window: upstream's ids for N <= 20 s (its `encode` starts a second window
        past 20 s), upstream's `inference_tokenize` of one chunk up to 30 s. In eager mode clips over
        20 s go through the windowed path, so the ids equal `encode(x).ids` for any length.
        """
        samples = x.shape[-1]
        if not is_exporting():
            self._check_samples([int(samples)])
            if samples > self.keep_tokens * self.samples_per_token:
                return torch.stack(self._encode_clips([clip for clip in x.reshape(x.shape[0], -1)]))
        return self._encode_window(x)

    def _encode_window(self, x: Tensor) -> Tensor:
        """One window (B, 1, N <= 30 s), all clips N samples long -> ids (B, N // 1280, n_q)."""
        ids = self.quantizer.encode(self.quantizer_in(self.latent(x)))
        return ids[:, : x.shape[-1] // self.samples_per_token]

    def encode_ids_padded(self, x: Tensor) -> Tensor:
        """Upstream's own computation of one window: the clip zero-padded to 30 s, all frames encoded.

        Same ids as `encode_ids` (to float rounding) at several times the cost; kept as the reference the
        fast path is checked and benchmarked against.
        """
        samples = x.shape[-1]
        if samples > self.window_samples:
            raise InputError(f"encode_ids_padded takes one window (<= {self.window_samples} samples); got {samples}")
        ids = self.quantizer.encode(self.quantizer_in(self.latent(x, padded=True)))
        return ids[:, : samples // self.samples_per_token]

    def codes_to_latent(self, ids: Tensor) -> Tensor:
        """Ids (B, T, n <= n_q) -> upstream's `quantizer.decode_codes` (B, T, 3072): summed codes, projected."""
        return self.quantizer_out(self.quantizer.decode(ids))

    def decode_mel(self, ids: Tensor) -> Tensor:
        """Ids (B, T, n_q) -> the decoder's mel (B, n_mels, 8 T), the vocoder's input."""
        x = self.post_rvq_adapter(self.codes_to_latent(ids))
        x = self.upsample(x.transpose(1, 2)).transpose(1, 2)
        return self.acoustic_decoder(x)

    def decode_ids(self, ids: Tensor) -> Tensor:
        """Ids (B, T, n_q), T <= one window (375) -> audio (B, 1, T * 1280) at `output_sample_rate`."""
        if not is_exporting() and ids.shape[1] > self.config.post_rvq_max_positions:
            raise InputError(
                f"decode_ids takes at most {self.config.post_rvq_max_positions} codes (one window); got "
                f"{ids.shape[1]}. Use decode(), which runs upstream's overlapping windows."
            )
        return self.vocoder(self.decode_mel(ids))

    # -- user API ----------------------------------------------------------------------------------
    def encode(
        self,
        x: Any,
        lengths: Sequence[int] | Tensor | None = None,
        sample_rate: int | None = None,
        **kwargs: Any,
    ) -> Tokens:
        """Audio (N,), (1, N) or (B, 1, N) at 16 kHz (or at `sample_rate`, resampled) -> Tokens, ids (B, T, 8).

        `lengths` gives each clip's sample count in a right-padded batch; each clip gets its solo ids.
        Clips shorter than 1280 samples (80 ms, one code) are refused; stereo must be downmixed first.
        """
        if kwargs:
            raise InputError(f"unknown encode option(s) {sorted(kwargs)}; xytokenizer takes lengths= and sample_rate=")
        wave = self.prepare(x)
        batch, _, total = wave.shape
        counts = check_lengths(lengths, batch, total)
        if sample_rate is not None and int(sample_rate) != self.config.sample_rate:
            wave, counts = self._resample(wave, counts, sample_rate)
        self._check_samples(counts)
        with torch.no_grad():
            pieces = self._encode_clips([wave[b, 0, : counts[b]] for b in range(batch)])
        longest = max(p.shape[0] for p in pieces)
        ids = torch.stack([F.pad(p, (0, 0, 0, longest - p.shape[0])) for p in pieces])
        return self.make_tokens(
            ids,
            grid=(longest,),
            lengths=torch.tensor([p.shape[0] for p in pieces], dtype=torch.long),
            original_size=torch.tensor(counts, dtype=torch.long),
            meta={
                "sample_rate": self.config.sample_rate,
                "token_rate": self.spec.token_rate,
                "decode_sample_rate": self.output_sample_rate,
            },
        )

    def decode(self, tokens: Tokens | Tensor, **kwargs: Any) -> Tensor:
        """Tokens or ids (B, T, n) / (T, n), n <= 8 -> audio (B, 1, 1280 * T) at `output_sample_rate`.

        Each clip decodes to the samples its codes cover (1280 per code at 16 kHz), zero past its end
        in a batch of different lengths; over 375 codes upstream's overlapping windows are used.
        """
        if kwargs:
            raise InputError(f"unknown decode option(s) {sorted(kwargs)}; xytokenizer's decode takes none")
        ids, counts = self._ids_and_counts(tokens)
        per_code = self.output_samples_per_token
        out = torch.zeros(ids.shape[0], 1, max(counts) * per_code, device=self.device, dtype=self.dtype)
        plan = []  # (clip, first code, codes in the window, codes kept)
        for b, count in enumerate(counts):
            for start in range(0, count, self.keep_tokens):
                size = min(self.window_tokens, count - start)
                plan.append((b, start, size, min(size, self.keep_tokens)))
        with torch.no_grad():
            for size in sorted({p[2] for p in plan}):
                group = [p for p in plan if p[2] == size]
                for first in range(0, len(group), self.config.max_windows_per_pass):
                    part = group[first : first + self.config.max_windows_per_pass]
                    batch = torch.stack([ids[b, start : start + size] for b, start, _, _ in part])
                    audio = self.decode_ids(batch)
                    for row, (b, start, _, kept) in enumerate(part):
                        out[b, :, start * per_code : (start + kept) * per_code] = audio[row, :, : kept * per_code]
        return out

    def embed(self, ids: Tensor) -> Tensor:
        """Code vectors (B, T, 3072) of ids (B, T, n <= 8): upstream's `decode_codes`, the decoder's input."""
        ids = check_ids(ids, self.spec.codebook_sizes).to(self.device)
        return self.codes_to_latent(ids)

    def forward(self, x: Tensor) -> dict[str, Any]:
        """Training step on one window (B, 1, N): reconstruction (B, 1, 1280 T'), ids, RVQ losses and usage."""
        latent = self.latent(x)
        q = self.quantizer(self.quantizer_in(latent))
        x = self.post_rvq_adapter(self.quantizer_out(q.quantized))
        mel = self.acoustic_decoder(self.upsample(x.transpose(1, 2)).transpose(1, 2))
        audio = self.vocoder(mel)
        return {"reconstruction": audio, "ids": q.ids, "losses": q.losses, "usage": q.usage, "latent": latent}

    # -- upstream id layout ------------------------------------------------------------------------
    def tokens_to_upstream(self, tokens: Tokens) -> Tensor:
        """(B, T, nq) -> upstream's (nq, B, T) codes (`inference_tokenize`); `[:, b, :T_b]` is `encode`'s entry b."""
        if tokens.ids is None:
            raise InputError("these Tokens hold no ids")
        return tokens.ids.permute(2, 0, 1)

    def tokens_from_upstream(self, ids: Any, **kwargs: Any) -> Tokens:
        """Upstream codes -> Tokens: (nq, T) (one `codes_list` entry), (nq, B, T), or a list of (nq, T_i)."""
        if kwargs:
            raise InputError(f"unknown option(s) {sorted(kwargs)} for tokens_from_upstream")
        if isinstance(ids, list | tuple):
            clips = [torch.as_tensor(c) for c in ids]
            if not clips or any(c.dim() != 2 for c in clips):
                raise InputError("a codes_list must be a non-empty list of (nq, T) arrays (upstream encode's output)")
            counts = [int(c.shape[1]) for c in clips]
            codes = torch.stack([F.pad(c, (0, max(counts) - c.shape[1])) for c in clips], dim=1)
        else:
            codes = torch.as_tensor(ids)
            if codes.dim() == 2:
                codes = codes.unsqueeze(1)
            if codes.dim() != 3:
                raise InputError(f"upstream codes must be (nq, T) or (nq, B, T); got shape {tuple(codes.shape)}")
            counts = [int(codes.shape[2])] * codes.shape[1]
        if not 1 <= codes.shape[0] <= self.config.num_quantizers:
            raise InputError(
                f"upstream codes put the {self.config.num_quantizers} quantizers first, (nq, B, T); got shape "
                f"{tuple(codes.shape)}"
            )
        ours = check_ids(codes.permute(1, 2, 0), self.spec.codebook_sizes)
        return self.make_tokens(
            ours.contiguous(),
            grid=(ours.shape[1],),
            lengths=torch.tensor(counts, dtype=torch.long),
            meta={"sample_rate": self.config.sample_rate, "token_rate": self.spec.token_rate},
        )

    # -- helpers -----------------------------------------------------------------------------------
    def _check_samples(self, counts: Sequence[int]) -> None:
        short = min(counts)
        if short < self.samples_per_token:
            rate = self.config.sample_rate
            raise InputError(
                f"audio too short: {short} samples; xytokenizer gives one code per {self.samples_per_token} samples "
                f"({1000 * self.samples_per_token / rate:.0f} ms at {rate} Hz) and drops the rest, so it needs at "
                "least that many. Pad the clip with silence or leave it out."
            )

    @torch.no_grad()
    def _encode_clips(self, clips: list[Tensor]) -> list[Tensor]:
        """Mono clips (N_i,) -> ids (N_i // 1280, n_q), through upstream's 30 s windows every 20 s."""
        hop = self.keep_tokens * self.samples_per_token
        plan = []  # (clip, start sample, samples)
        for i, clip in enumerate(clips):
            samples = clip.shape[-1]
            # a last window shorter than one code contributes nothing (upstream encodes it to 0 codes)
            plan += [(i, s, min(self.window_samples, samples - s)) for s in range(0, samples, hop)
                     if samples - s >= self.samples_per_token]
        order = sorted(range(len(plan)), key=lambda j: -plan[j][2])
        found: dict[int, Tensor] = {}
        step = self.config.max_windows_per_pass
        for first in range(0, len(order), step):
            group = order[first : first + step]
            segments = [clips[plan[j][0]][plan[j][1] : plan[j][1] + plan[j][2]] for j in group]
            for j, ids in zip(group, self._encode_batch(segments), strict=True):
                found[j] = ids
        out = []
        for i, clip in enumerate(clips):
            parts = [found[j][: self.keep_tokens] for j in range(len(plan)) if plan[j][0] == i]
            out.append(torch.cat(parts)[: clip.shape[-1] // self.samples_per_token])
        return out

    def _encode_batch(self, segments: list[Tensor]) -> list[Tensor]:
        """Up to one window each -> ids (n_i // 1280, n_q) each, equal to each segment's solo ids."""
        counts = [int(s.shape[-1]) for s in segments]
        if len(segments) == 1:
            return [self._encode_window(segments[0].reshape(1, 1, -1))[0]]
        hop = self.config.hop_length
        wave = torch.stack([F.pad(s, (0, max(counts) - s.shape[-1])) for s in segments])
        frames = torch.tensor([(c + hop - 1) // hop for c in counts], device=wave.device)
        keep = int(frames.max()) // self.config.stride
        ragged = len(set(counts)) > 1
        latent = self._encode_mel(self.log_mel(wave), frames if ragged else None, keep)
        z = self.quantizer_in(latent)
        ids = self.quantizer.encode(z)
        out = []
        for b, count in enumerate(counts):
            steps = count // self.samples_per_token
            if self._min_gap(z[b, :steps], ids[b, :steps]) < TIE_GAP:
                out.append(self._encode_window(segments[b].reshape(1, 1, -1))[0])
            else:
                out.append(ids[b, :steps])
        return out

    def _min_gap(self, z: Tensor, ids: Tensor) -> float:
        return float(self.rvq_gaps(z, ids).min()) if z.shape[0] else math.inf

    def rvq_gaps(self, z: Tensor, ids: Tensor) -> Tensor:
        """Per frame of one clip, the smallest (second - best) / (|x|^2 + |c_best|^2) over the RVQ stages.

        `z` (T, rvq_dim) is the RVQ input, `ids` (T, n_q) its ids. Where this is tiny, float rounding (a
        batched kernel, another CPU) may pick the other code; the parity fixtures' tie masks use the same
        measure.
        """
        residual = z.detach().float()
        smallest = torch.full((z.shape[0],), math.inf, device=z.device)
        for stage, layer in enumerate(self.quantizer.layers):
            codes = layer.codebook.detach().float()
            code_sq = codes.pow(2).sum(1)
            x_sq = residual.pow(2).sum(1, keepdim=True)
            dist = torch.addmm(code_sq.unsqueeze(0), residual, codes.T, alpha=-2).add_(x_sq)
            chosen = ids[:, stage : stage + 1]
            best = dist.gather(1, chosen)
            second = dist.scatter(1, chosen, math.inf).min(dim=1, keepdim=True).values
            smallest = torch.minimum(smallest, ((second - best) / (x_sq + code_sq[chosen]))[:, 0])
            residual = residual - codes[chosen[:, 0]]
        return smallest

    def _ids_and_counts(self, tokens: Tokens | Tensor) -> tuple[Tensor, list[int]]:
        lengths = None
        if isinstance(tokens, Tokens):
            if tokens.ids is None:
                raise InputError("these Tokens hold no ids; xytokenizer decodes discrete ids only")
            ids, lengths = tokens.ids, tokens.lengths
        else:
            ids = tokens
        ids = torch.as_tensor(ids)
        if ids.dim() == 2:
            ids = ids.unsqueeze(0)
        if ids.dim() != 3:
            raise InputError(
                f"xytokenizer ids must be (B, T, n_q) or (T, n_q); got shape {tuple(ids.shape)}. Upstream's "
                "(nq, T) codes go through tokens_from_upstream first."
            )
        ids = check_ids(ids, self.spec.codebook_sizes).to(self.device)
        batch, steps = ids.shape[:2]
        counts = [steps] * batch if lengths is None else [int(c) for c in torch.as_tensor(lengths).reshape(-1)]
        if len(counts) != batch or min(counts) < 1 or max(counts) > steps:
            raise InputError(f"Tokens.lengths {counts} do not fit ids of shape {tuple(ids.shape)}")
        return ids, counts

    def _resample(self, wave: Tensor, counts: list[int], rate: int) -> tuple[Tensor, list[int]]:
        return resample_clips(wave, counts, rate, self.config.sample_rate, "xytokenizer", warn=True)


# -- converter -----------------------------------------------------------------------------------------

# Upstream module prefix -> ours. Longest first: `semantic_encoder_adapter.` also starts with `semantic_encoder`.
_PREFIXES = (
    ("semantic_encoder_adapter.", "semantic_adapter."),
    ("semantic_encoder.", "semantic_encoder."),
    ("acoustic_encoder.", "acoustic_encoder."),
    ("pre_rvq_adapter.", "pre_rvq_adapter."),
    ("post_rvq_adapter.", "post_rvq_adapter."),
    ("acoustic_decoder.", "acoustic_decoder."),
    ("downsample.", "downsample."),
    ("upsample.up_conv.", "upsample."),
    ("enhanced_vocos.", "vocoder."),
    ("vocos.", "vocoder."),
)
# Upstream `OmniWhisperTransformerLayer` names -> the shared WhisperBlock's.
_BLOCK = {
    "self_attn.q_proj": "attn.query",
    "self_attn.k_proj": "attn.key",
    "self_attn.v_proj": "attn.value",
    "self_attn.out_proj": "attn.out",
    "self_attn_layer_norm": "attn_ln",
    "fc1": "mlp.0",
    "fc2": "mlp.2",
    "final_layer_norm": "mlp_ln",
}
_LAYER = re.compile(r"^layers\.(\d+)\.(.+)\.(weight|bias)$")
_STACKS = ("semantic_encoder.", "semantic_adapter.", "acoustic_encoder.", "pre_rvq_adapter.", "post_rvq_adapter.",
           "acoustic_decoder.")


def _rename(key: str) -> str | None:
    """Our name for an upstream key outside the quantizer, or None when it maps to nothing."""
    found = [(theirs, ours) for theirs, ours in _PREFIXES if key.startswith(theirs)]
    if not found:
        return None
    theirs, ours = found[0]
    rest = key[len(theirs) :]
    if ours in _STACKS:
        match = _LAYER.match(rest)
        if match:
            index, name, leaf = match.groups()
            if name not in _BLOCK:
                return None
            rest = f"blocks.{index}.{_BLOCK[name]}.{leaf}"
        elif rest.startswith("layer_norm."):
            rest = "ln_post." + rest[len("layer_norm.") :]
    return ours + rest


def _weight_norm(state: dict[str, Tensor], prefix: str) -> Tensor:
    """Fold an old-style (weight_g, weight_v) or parametrized weight norm (dim 0) into one weight."""
    pairs = (("weight_g", "weight_v"), ("parametrizations.weight.original0", "parametrizations.weight.original1"))
    for g_name, v_name in pairs:
        if prefix + g_name in state and prefix + v_name in state:
            g, v = state.pop(prefix + g_name).float(), state.pop(prefix + v_name).float()
            return torch._weight_norm(v, g, 0)
    if prefix + "weight" in state:
        return state.pop(prefix + "weight").float()
    raise CheckpointError(f"no weight for {prefix[:-1]} (expected {prefix}weight_g / weight_v)")


def _kwargs(params: Mapping[str, Any], name: str) -> dict[str, Any]:
    part = params.get(name)
    if not isinstance(part, Mapping):
        raise ConfigError(f"upstream config has no `{name}` mapping (generator_params keys: {sorted(params)})")
    return dict(part)


def config_from_upstream(upstream_config: Any) -> XYTokenizerConfig:
    """Our config from upstream's YAML (the whole file or its `generator_params`), as the official loader reads it."""
    if upstream_config is None:
        raise ConfigError(
            "xytokenizer's converter needs the upstream config (config/xy_tokenizer_config.yaml, or its "
            "generator_params); registered variants carry it under upstream.config"
        )
    cfg: Any = plain_config(upstream_config)
    params = cfg.get("generator_params", cfg)
    fe = _kwargs(params, "feature_extractor_kwargs")
    sem = _kwargs(params, "semantic_encoder_kwargs")
    aco = _kwargs(params, "acoustic_encoder_kwargs")
    sem_ad = _kwargs(params, "semantic_encoder_adapter_kwargs")
    pre = _kwargs(params, "pre_rvq_adapter_kwargs")
    down = _kwargs(params, "downsample_kwargs")
    rvq = _kwargs(params, "quantizer_kwargs")
    post = _kwargs(params, "post_rvq_adapter_kwargs")
    up = _kwargs(params, "upsample_kwargs")
    dec = _kwargs(params, "acoustic_decoder_kwargs")
    voc = _kwargs(params, "vocos_kwargs")
    dim = int(sem["d_model"])
    heads = int(sem["encoder_attention_heads"])
    ffn = int(sem["encoder_ffn_dim"])
    if ffn % dim:
        raise UnsupportedError(f"encoder_ffn_dim {ffn} is not a multiple of d_model {dim}; not supported")
    width = dim * int(down["avg_pooler"])
    stacks = (sem_ad, pre, post)
    checks = {  # what upstream allows to differ but no published model does, and this family does not implement
        "acoustic encoder (d_model, heads, ffn, layers)": (
            [aco["d_model"], aco["encoder_attention_heads"], aco["encoder_ffn_dim"], aco["encoder_layers"]],
            [dim, heads, ffn, sem["encoder_layers"]],
        ),
        "adapter/decoder d_model": ([a["d_model"] for a in (*stacks, dec, down, up)], [dim] * 6),
        "adapter heads": (
            [a["encoder_attention_heads"] for a in stacks] + [dec["decoder_attention_heads"]], [heads] * 4
        ),
        "adapter ffn": ([a["encoder_ffn_dim"] for a in stacks] + [dec["decoder_ffn_dim"]], [ffn] * 4),
        "adapter in/out": (
            [sem_ad["input_dim"], sem_ad["output_dim"], pre["input_dim"], pre["output_dim"]], [dim, dim, 2 * dim, dim]
        ),
        "kernel sizes": ([a.get("kernel_size", 3) for a in (sem, aco, dec)], [3, 3, 3]),
        "strides": ([aco["stride_size"], dec["stride_size"]], [sem["stride_size"]] * 2),
        "mel bins": (
            [sem["num_mel_bins"], aco["num_mel_bins"], dec["num_mel_bins"], voc["input_channels"]],
            [fe["feature_size"]] * 4,
        ),
        "activations": ([a.get("activation_function", "gelu") for a in (sem, aco, dec)], ["gelu"] * 3),
        "RVQ widths (in, out, post-RVQ in/out)": (
            [rvq["input_dim"], rvq["output_dim"], post["input_dim"], post["output_dim"]], [width] * 4
        ),
        "codebook_dim": ([rvq["codebook_dim"]], [rvq["rvq_dim"]]),
        "upsampling stride": ([up["stride"]], [down["avg_pooler"]]),
        "vocoder padding / adanorm": ([voc.get("padding", "same"), voc.get("adanorm_num_embeddings")], ["same", None]),
    }
    for what, (got, expected) in checks.items():
        if [str(g) for g in got] != [str(e) for e in expected]:
            raise UnsupportedError(
                f"upstream config: {what} are {got}; the XY-Tokenizer layout this family implements needs {expected}"
            )
    sample_rate = int(params.get("sample_rate", params.get("input_sample_rate", fe.get("sampling_rate", 16000))))
    positions = (sem["max_audio_seconds"] * sem["sampling_rate"] // sem["hop_length"]) // sem["stride_size"]
    config = XYTokenizerConfig(
        sample_rate=sample_rate,
        n_fft=int(fe.get("n_fft", 400)),
        hop_length=int(fe.get("hop_length", 160)),
        n_mels=int(fe["feature_size"]),
        dim=dim,
        heads=heads,
        mlp_ratio=ffn // dim,
        encoder_layers=int(sem["encoder_layers"]),
        semantic_adapter_layers=int(sem_ad["encoder_layers"]),
        pre_rvq_layers=int(pre["encoder_layers"]),
        post_rvq_layers=int(post["encoder_layers"]),
        decoder_layers=int(dec["decoder_layers"]),
        stride=int(sem["stride_size"]),
        downsample=int(down["avg_pooler"]),
        max_positions=int(positions),
        post_rvq_max_positions=int(post["max_source_positions"]),
        rvq_dim=int(rvq["rvq_dim"]),
        num_quantizers=int(rvq["num_quantizers"]),
        codebook_size=int(rvq["codebook_size"]),
        vocos_dim=int(voc["dim"]),
        vocos_intermediate_dim=int(voc["intermediate_dim"]),
        vocos_layers=int(voc["num_layers"]),
        vocos_n_fft=int(voc["n_fft"]),
        vocos_hop_length=int(voc["hop_size"]),
        window_seconds=int(fe.get("chunk_length", 30)),
        kmeans_iters=int(rvq.get("kmeans_iters", 10)),
        ema_decay=float(rvq.get("decay", 0.99)),
        threshold_dead=float(rvq.get("threshold_ema_dead", 2)),
        commitment_weight=float(rvq.get("commitment", 1.0)),
    )
    for what, size in (("semantic adapter", sem_ad), ("pre-RVQ adapter", pre)):
        if int(size["max_source_positions"]) != config.max_positions:
            raise UnsupportedError(
                f"{what} max_source_positions {size['max_source_positions']} != {config.max_positions}"
            )
    out_rate = params.get("output_sample_rate")
    implied = config.sample_rate * config.vocos_hop_length // config.hop_length
    if out_rate is not None and int(out_rate) != implied:
        raise ConfigError(
            f"output_sample_rate {out_rate} does not follow from the vocoder hop {config.vocos_hop_length} "
            f"({implied} Hz)"
        )
    return config


def convert_xytokenizer(
    state_dict: dict[str, Tensor], upstream_config: Any = None, **kwargs: Any
) -> XYTokenizer:
    """Upstream checkpoint (`ckpt["generator"]`, the whole file, or the bare state dict) -> XYTokenizer.

    Handles the published `xy_tokenizer.ckpt` (vocoder under `vocos.*`) and MOSS-TTSD's
    `XY_Tokenizer_TTSD_V0` (the same model with a 24 kHz vocoder under `enhanced_vocos.*`: its config's
    vocos_kwargs say n_fft 960, hop 240). Folds the RVQ projections' weight norm, keeps the positional
    tables of the checkpoint (upstream adds those buffers, not recomputed sinusoids) and the codebooks'
    EMA buffers (so training can go on), and refuses a never-initialised codebook (`inited` False).
    The dict is consumed (keys popped) so only one copy of the weights is held.
    """
    if kwargs:
        raise ConfigError(f"unknown converter option(s) {sorted(kwargs)}")
    state = state_dict
    if isinstance(state.get("generator"), Mapping):
        state = state["generator"]
    elif not any(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(
            "expected an XY-Tokenizer state dict or a checkpoint with a `generator` entry; found keys "
            f"{list(state)[:8]}"
        )
    config = config_from_upstream(upstream_config)
    vocoders = {p for p in ("vocos.", "enhanced_vocos.") if any(k.startswith(p) for k in state)}
    if len(vocoders) != 1:
        raise CheckpointError(
            f"expected the vocoder under exactly one of `vocos.*` (XY_Tokenizer) or `enhanced_vocos.*` "
            f"(XY_Tokenizer_TTSD_V0); found {sorted(vocoders) or 'neither'}"
        )
    ours: dict[str, Tensor] = {}
    for prefix, name in (("quantizer.input_proj.", "quantizer_in"), ("quantizer.output_proj.", "quantizer_out")):
        ours[f"{name}.weight"] = _weight_norm(state, prefix)[..., 0]
        if prefix + "bias" in state:
            ours[f"{name}.bias"] = state.pop(prefix + "bias").float()
    stage = re.compile(r"^quantizer\.quantizers\.(\d+)\.(codebook|embed_avg|cluster_size|inited)$")
    unmapped = []
    for key in list(state):
        value = state.pop(key)
        match = stage.match(key)
        if match:
            index, leaf = match.groups()
            if leaf == "inited":
                if not bool(value.reshape(-1)[0]):
                    raise CheckpointError(
                        f"{key} is False: that codebook was never initialised (upstream would run k-means on the "
                        "first batch). This is not a trained checkpoint."
                    )
                continue
            ours[f"quantizer.layers.{index}.{leaf}"] = value.float()
            continue
        name = _rename(key)
        if name is None:
            unmapped.append(key)
            continue
        ours[name] = value.float() if value.is_floating_point() else value
    if unmapped:
        raise CheckpointError(
            f"unmapped upstream keys ({len(unmapped)}): {', '.join(unmapped[:10])}. The checkpoint does not match "
            "the XY-Tokenizer layout this converter knows."
        )
    with torch.device("meta"):
        model = XYTokenizer(config)
    load_state_strict(model, ours, where="XY-Tokenizer upstream checkpoint", assign=True)
    _restore_derived_buffers(model)
    model.eval()
    return model


def _restore_derived_buffers(model: XYTokenizer) -> None:
    """Rebuild on the CPU what a meta-device build left empty: buffers computed from the config, never saved."""
    model.frontend = model._make_frontend()
    head = model.vocoder.head
    head.istft = InverseSTFT(head.istft.n_fft, head.istft.hop_length, padding="same", window=head.istft.window)
    for layer in model.quantizer.layers:
        layer.initialized = torch.ones((), dtype=torch.bool)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError(f"XY-Tokenizer tensors not filled by the checkpoint: {left[:8]}")


register_tokenizer(XYTokenizer, variants=("xytokenizer-emilia", "xytokenizer-ttsd-v0", "xytokenizer-tiny"))
register_converter("xytokenizer", convert_xytokenizer)
