"""S3Tokenizer: CosyVoice's supervised semantic speech tokens (encoder-only).

16 kHz mono audio -> Whisper-style log-mel (128 bins, hop 160, 100 frames/s) -> conv stem -> 6 pre-LN
transformer blocks of an ASR encoder -> one id per position:

    v1 50 Hz (CosyVoice-300M)      conv strides (1, 2), positional table, cosine-style VQ of 4096 codes
    v1 25 Hz (CosyVoice-300M-25Hz) conv strides (2, 2), positional table, same VQ
    v2 25 Hz (CosyVoice2-0.5B)     conv strides (2, 2), rotary q/k, FSMN memory, FSQ of 3^8 = 6561 codes

The v1 VQ l2-normalises the latent and takes the nearest *raw* codebook row (Euclidean), which is not
the cosine argmax. The v2 FSQ is round(tanh(project_down(h)) * 0.999) + 1 per channel, base-3 digits
with channel 0 least significant. There is no decoder: CosyVoice turns tokens back into speech with
its own flow-matching model and vocoder, so `decode` raises and `embed` returns code vectors.

Ids: (B, T') int64 with T' = ceil(frames / downsample), frames = samples // 160 (every clip gives
exactly the tokens its length implies). `Tokens.lengths` holds each clip's count; positions past it
are 0.

Long audio. The encoder sees at most one 30 s window (3000 frames; v1's positional table has 1500
rows). Longer clips are cut into windows starting every 26 s (2600 frames, 4 s overlap), as upstream
does, but with the fewest windows that cover the clip (the last one always holds more than 4 s), and
merged by ownership: window k supplies the tokens of frames [2600 k + 200, 2600 (k + 1) + 200), the
first window from 0 and the last to the end. For a two-window clip this is upstream's merge exactly
(drop 2 s of tokens on each side of each seam); upstream's own merge loses up to 2 s of tokens when
its last window is shorter than 4 s (their issue #53: 52.4 s -> 1260 tokens instead of 1310), ours
does not. Windows run in batches (`max_frames_per_pass` frames each) so memory stays bounded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from registry.checkpoint import ONNX_GRAPH_KEY, load_state_strict
from registry.errors import CheckpointError, ConfigError, InputError
from registry.registry import register_converter, register_tokenizer
from zoo.audio_batch import check_lengths, resample_clips
from zoo.layers.attention import MaskSpec
from zoo.layers.mel import LogMel
from zoo.layers.quantize import FSQ, VectorQuantizer
from zoo.layers.whisper import WhisperAttention, WhisperBlock, WhisperEncoder
from zoo.spec import TokenSpec
from zoo.tokenizer import Tokenizer, check_ids, is_exporting
from zoo.tokens import Tokens

S3_FSQ_SCALE = 0.9990000128746033  # upstream's float32 0.999


@dataclass
class S3TokenizerConfig:
    """Hyperparameters; the defaults are CosyVoice2-0.5B's `speech_tokenizer_v2` (25 Hz, FSQ 3^8)."""

    sample_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 128
    dim: int = 1280
    heads: int = 20
    layers: int = 6
    mlp_ratio: int = 4
    strides: list[int] = field(default_factory=lambda: [2, 2])
    positions: str = "rotary"  # "table" (v1: checkpoint positional embedding) or "rotary" (v2)
    max_positions: int = 1500  # rows of the v1 positional table
    rotary_theta: float = 10000.0
    fsmn_kernel: int = 31  # v2's FSMN memory per block; 0 = none (v1)
    attn_ln_eps: float = 1e-6
    mlp_ln_eps: float = 1e-5
    quantizer: str = "fsq"  # "vq" (v1) or "fsq" (v2)
    codebook_size: int = 6561
    fsq_levels: list[int] = field(default_factory=lambda: [3] * 8)
    fsq_scale: float = S3_FSQ_SCALE
    window_frames: int = 3000  # 30 s: the longest input one encoder pass sees
    window_hop_frames: int = 2600  # next window starts 26 s later (4 s overlap)
    max_frames_per_pass: int = 24000  # padded mel frames per encoder batch (bounds memory on long audio)


class FSMNAttention(WhisperAttention):
    """Whisper attention plus v2's FSMN memory: a depthwise conv over time of the (masked) value stream.

    out = out_proj(attention) + (conv(v * valid) + v * valid) * valid, conv = Conv1d(dim, dim, k,
    groups=dim, no bias) with zero padding (k - 1) // 2 left and the rest right.
    """

    def __init__(self, dim: int, heads: int, kernel_size: int) -> None:
        super().__init__(dim, heads)
        self.fsmn_block = nn.Conv1d(dim, dim, kernel_size, groups=dim, bias=False)
        self.fsmn_pad = ((kernel_size - 1) // 2, kernel_size - 1 - (kernel_size - 1) // 2)

    def memory(self, v: Tensor, valid: Tensor | None) -> Tensor:
        m = v if valid is None else v * valid
        h = self.fsmn_block(F.pad(m.transpose(1, 2), self.fsmn_pad)).transpose(1, 2) + m
        return h if valid is None else h * valid

    def forward(
        self,
        x: Tensor,
        mask: MaskSpec | None = None,
        rotary: tuple[Tensor, Tensor] | None = None,
        valid: Tensor | None = None,
    ) -> Tensor:
        q, k, v = self.query(x), self.key(x), self.value(x)
        return self.out(self.attend(q, k, v, mask, rotary)) + self.memory(v, valid)


def window_starts(frames: int, window: int, hop: int) -> list[int]:
    """Start frames of the fewest `window`-frame windows, `hop` apart, that cover `frames` frames."""
    if frames <= window:
        return [0]
    return [k * hop for k in range(math.ceil((frames - window) / hop) + 1)]


class S3Tokenizer(Tokenizer):
    """CosyVoice's S3Tokenizer v1 / v2 (see the module docstring): audio (B, 1, N) at 16 kHz -> ids (B, T')."""

    family = "s3tokenizer"
    parity_cases = ("s3tokenizer_v1/a", "s3tokenizer_v2/a")  # v1 50 Hz and v2; v1 25 Hz has no fixture
    config_class = S3TokenizerConfig

    def __init__(self, config: S3TokenizerConfig) -> None:
        super().__init__(config)
        cfg = config
        if cfg.quantizer not in ("vq", "fsq"):
            raise ConfigError(f"s3tokenizer quantizer must be 'vq' (v1) or 'fsq' (v2); got {cfg.quantizer!r}")
        if cfg.positions not in ("table", "rotary"):
            raise ConfigError(f"s3tokenizer positions must be 'table' (v1) or 'rotary' (v2); got {cfg.positions!r}")
        if len(cfg.strides) != 2:
            raise ConfigError(f"strides must list the two conv strides, e.g. [2, 2]; got {cfg.strides}")
        self.frontend = LogMel(
            sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels
        )
        fsmn = cfg.fsmn_kernel

        def block(_: int) -> nn.Module:
            attn = FSMNAttention(cfg.dim, cfg.heads, fsmn) if fsmn else WhisperAttention(cfg.dim, cfg.heads)
            return WhisperBlock(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.attn_ln_eps, cfg.mlp_ln_eps, attn=attn)

        self.encoder = WhisperEncoder(
            cfg.n_mels,
            cfg.dim,
            cfg.heads,
            cfg.layers,
            strides=(cfg.strides[0], cfg.strides[1]),
            positions=cfg.positions,
            max_positions=cfg.max_positions,
            rotary_theta=cfg.rotary_theta,
            mask_conv_inputs=True,
            block=block,
        )
        self.downsample = self.encoder.downsample
        if cfg.quantizer == "vq":
            self.project_down = None
            self.quantizer: nn.Module = VectorQuantizer(cfg.codebook_size, cfg.dim, normalize_inputs=True)
        else:
            if math.prod(cfg.fsq_levels) != cfg.codebook_size:
                raise ConfigError(
                    f"fsq_levels {cfg.fsq_levels} give {math.prod(cfg.fsq_levels)} codes, codebook_size says "
                    f"{cfg.codebook_size}; make them agree"
                )
            self.project_down = nn.Linear(cfg.dim, len(cfg.fsq_levels))
            self.quantizer = FSQ(cfg.fsq_levels, bound="scaled_tanh", tanh_scale=cfg.fsq_scale)
        self._check_windows()

    def _check_windows(self) -> None:
        cfg = self.config
        half = cfg.window_frames - cfg.window_hop_frames
        if not 0 < cfg.window_hop_frames <= cfg.window_frames or half % 2:
            raise ConfigError(
                f"need 0 < window_hop_frames <= window_frames with an even overlap; got {cfg.window_hop_frames} "
                f"and {cfg.window_frames}"
            )
        if cfg.window_hop_frames % self.downsample or (half // 2) % self.downsample:
            raise ConfigError(
                f"window hop {cfg.window_hop_frames} and half overlap {half // 2} must be multiples of the "
                f"downsampling {self.downsample} so that window tokens line up"
            )
        if cfg.positions == "table" and int(self.encoder.output_lengths(cfg.window_frames)) > cfg.max_positions:
            raise ConfigError(
                f"a {cfg.window_frames}-frame window gives more tokens than the {cfg.max_positions}-row positional "
                "table; lower window_frames"
            )

    # -- facts -------------------------------------------------------------------------------------
    @property
    def spec(self) -> TokenSpec:
        cfg = self.config
        samples_per_token = cfg.hop_length * self.downsample
        return TokenSpec(
            modality="audio",
            kind="discrete",
            codebook_sizes=(cfg.codebook_size,),
            token_rate=cfg.sample_rate / samples_per_token,
            downsample=(samples_per_token,),
            sample_rate=cfg.sample_rate,
            channels=1,
            can_decode=False,
            export={"encoder": None, "decoder": "encoder-only: S3Tokenizer has no decoder"},
            notes=(
                "ids = ceil((samples // 160) / downsample) per clip; audio over 30 s is encoded in 30 s windows "
                "(26 s hop) merged without losing tokens. The exported encoder graph covers one window (<= 30 s); "
                "encode() does the windowing."
            ),
        )

    def num_tokens(self, num_samples: int) -> int:
        """Tokens for a clip of `num_samples` samples at the model's rate."""
        return int(self.encoder.output_lengths(int(self.frontend.num_frames(num_samples))))

    # -- tensor paths (exportable) -----------------------------------------------------------------
    def quantize(self, hidden: Tensor) -> Tensor:
        """Encoder states (..., dim) -> int64 ids (...)."""
        if self.project_down is not None:
            return self.quantizer.encode(self.project_down(hidden).float())
        return self.quantizer.encode(hidden.float())

    def ids_from_mel(self, mel: Tensor, mel_lengths: Tensor | None = None) -> Tensor:
        """Log-mel (B, n_mels, T) (+ valid frames) -> ids (B, T'), one encoder pass (T <= window_frames)."""
        hidden, _ = self.encoder(mel, mel_lengths)
        return self.quantize(hidden)

    def encode_ids(self, x: Tensor) -> Tensor:
        """Audio (B, 1, N) or (B, N) -> ids (B, T'); each item is one whole clip.

        Exported, this is one encoder window (clips up to 30 s). In eager mode longer clips go through
        the windowed path, so the ids equal `encode(x).ids` for any length.
        """
        mel = self.frontend(x)
        if not is_exporting() and mel.shape[-1] > self.config.window_frames:
            return torch.stack(self._encode_mels(list(mel)))
        return self.ids_from_mel(mel)

    def encoder_module(self) -> nn.Module:
        return super().encoder_module().train(self.training)

    def mel_encoder_module(self) -> nn.Module:
        """(mel (B, n_mels, T) float32, mel_lengths (B,) int) -> ids (B, T'): upstream ONNX's own interface."""
        return _MelToIds(self).train(self.training)

    # -- bookkeeping paths -------------------------------------------------------------------------
    def encode(
        self,
        x: Any,
        lengths: Sequence[int] | Tensor | None = None,
        sample_rate: int | None = None,
        **kwargs: Any,
    ) -> Tokens:
        """Audio (N,), (C=1, N) or (B, 1, N) at `sample_rate` (default 16 kHz) -> Tokens (B, T').

        `lengths` gives each clip's samples in a right-padded batch; a clip gives the same ids in any
        batch as alone. Audio at another rate is resampled to 16 kHz (band-limited polyphase,
        `modalities.resample`) when `sample_rate` says so; without `sample_rate` it is taken as 16 kHz.
        """
        if kwargs:
            raise InputError(f"unknown encode option(s) {sorted(kwargs)}; s3tokenizer takes lengths= and sample_rate=")
        wave = self.prepare(x)
        batch, _, total = wave.shape
        counts = check_lengths(lengths, batch, total)
        if sample_rate is not None and int(sample_rate) != self.config.sample_rate:
            wave, counts = self._resample(wave, counts, sample_rate)
        clips = [wave[b, 0, : counts[b]] for b in range(batch)]
        with torch.no_grad():
            mels = []
            for b, clip in enumerate(clips):
                self.frontend.check_length(clip.shape[-1], what=f"clip {b}" if batch > 1 else "audio")
                mels.append(self.frontend(clip[None])[0])
            pieces = self._encode_mels(mels)
        longest = max(p.shape[0] for p in pieces)
        ids = torch.stack([F.pad(p, (0, longest - p.shape[0])) for p in pieces])
        return self.make_tokens(
            ids,
            grid=(longest,),
            lengths=torch.tensor([p.shape[0] for p in pieces], dtype=torch.long),
            original_size=torch.tensor(counts, dtype=torch.long),
            meta={"sample_rate": self.config.sample_rate, "token_rate": self.spec.token_rate},
        )

    def _resample(self, wave: Tensor, counts: list[int], rate: int) -> tuple[Tensor, list[int]]:
        return resample_clips(wave, counts, rate, self.config.sample_rate, "s3tokenizer", warn=False)

    def _encode_mels(self, mels: list[Tensor]) -> list[Tensor]:
        """Per-clip log-mels (n_mels, T_i) -> per-clip ids (T_i',), windowing clips over 30 s."""
        cfg = self.config
        window, hop = cfg.window_frames, cfg.window_hop_frames
        plan = []  # (clip, start frame, frames)
        for i, mel in enumerate(mels):
            frames = mel.shape[-1]
            plan += [(i, s, min(window, frames - s)) for s in window_starts(frames, window, hop)]
        window_ids: list[Tensor] = []
        for group in _passes([n for _, _, n in plan], cfg.max_frames_per_pass):
            longest = max(plan[j][2] for j in group)
            batch = torch.stack([F.pad(mels[plan[j][0]][:, plan[j][1] : plan[j][1] + plan[j][2]],
                                       (0, longest - plan[j][2])) for j in group])
            frames = torch.tensor([plan[j][2] for j in group], device=batch.device)
            ids = self.ids_from_mel(batch, frames)
            for row, j in enumerate(group):
                window_ids.append(ids[row, : int(self.encoder.output_lengths(plan[j][2]))])
        return self._merge(mels, plan, window_ids)

    def _merge(self, mels: list[Tensor], plan: list[tuple[int, int, int]], window_ids: list[Tensor]) -> list[Tensor]:
        """Each clip's tokens, each taken from the window that owns it (see the module docstring)."""
        cfg = self.config
        half = (cfg.window_frames - cfg.window_hop_frames) // 2 // self.downsample
        out = []
        for i, mel in enumerate(mels):
            mine = [(start // self.downsample, ids) for (clip, start, _), ids in zip(plan, window_ids, strict=True)
                    if clip == i]
            total = int(self.encoder.output_lengths(mel.shape[-1]))
            parts = []
            for k, (offset, ids) in enumerate(mine):
                first = 0 if k == 0 else offset + half
                last = total if k == len(mine) - 1 else mine[k + 1][0] + half
                parts.append(ids[first - offset : last - offset])
            merged = torch.cat(parts)
            assert merged.shape[0] == total, (merged.shape, total)
            out.append(merged)
        return out

    def embed(self, ids: Tensor) -> Tensor:
        """Code vectors (..., D): v1 the raw codebook rows (1280), v2 the FSQ levels in {-1, 0, 1} (8)."""
        ids = check_ids(ids.ids if isinstance(ids, Tokens) else ids, self.config.codebook_size)
        return self.quantizer.decode(ids)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> dict[str, Any]:
        """Training step on audio (B, 1, N): log-mel of the batch as given, encoder, quantizer output and losses.

        `lengths` (samples) masks padded frames. Encoder-only, so there is no reconstruction loss: the
        losses are the quantizer's (commitment / codebook for v1's VQ; none for FSQ).
        """
        mel = self.frontend(x)
        frames = None if lengths is None else self.frontend.num_frames(torch.as_tensor(lengths, device=mel.device))
        hidden, out_lengths = self.encoder(mel, frames)
        z = self.project_down(hidden) if self.project_down is not None else hidden
        result = self.quantizer(z.float())
        return {
            "latent": hidden,
            "ids": result.ids,
            "quantized": result.quantized,
            "losses": result.losses,
            "lengths": out_lengths,
        }

    # -- upstream id layout ------------------------------------------------------------------------
    def tokens_to_upstream(self, tokens: Tokens) -> Tensor:
        """Upstream's layout is ours: (B, T') ids with per-clip lengths (upstream pads with 0 past them)."""
        return tokens.ids

    def tokens_from_upstream(self, ids: Any, lengths: Any = None, **kwargs: Any) -> Tokens:
        """Tokens from upstream `quantize` output: ids (B, T') (int32 or int64) and optional lengths (B,)."""
        ids_t = torch.as_tensor(ids)
        if ids_t.dim() == 1:
            ids_t = ids_t[None]
        if ids_t.dim() == 3 and ids_t.shape[1] == 1:  # upstream ONNX output (1, 1, T')
            ids_t = ids_t[:, 0]
        ids_t = check_ids(ids_t, self.config.codebook_size, what="upstream ids")
        if ids_t.dim() != 2:
            raise InputError(f"upstream ids are laid out (B, T'); got shape {tuple(ids_t.shape)}")
        lens = None if lengths is None else torch.as_tensor(lengths).long().reshape(-1)
        return self.make_tokens(ids_t, grid=(ids_t.shape[1],), lengths=lens)


def _passes(frames: list[int], budget: int) -> list[list[int]]:
    """Consecutive groups of windows whose padded size (count x longest) stays within `budget` frames."""
    groups: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for j, n in enumerate(frames):
        if current and (len(current) + 1) * max(longest, n) > budget:
            groups.append(current)
            current, longest = [], 0
        current.append(j)
        longest = max(longest, n)
    if current:
        groups.append(current)
    return groups


class _MelToIds(nn.Module):
    def __init__(self, tokenizer: S3Tokenizer) -> None:
        super().__init__()
        self.tokenizer = tokenizer

    def forward(self, mel: Tensor, mel_lengths: Tensor) -> Tensor:
        return self.tokenizer.ids_from_mel(mel, mel_lengths.long())


# -- conversion -----------------------------------------------------------------------------------
# Names of initializers in the official ONNX files that upstream's converter maps directly (the rest
# are named after the graph node consuming them).
_ONNX_FIXED = {
    "onnx::Conv_1519": "encoder.conv1.weight",  # v1 50 Hz (CosyVoice-300M)
    "onnx::Conv_1520": "encoder.conv1.bias",
    "onnx::Conv_1521": "encoder.conv2.weight",
    "onnx::Conv_1522": "encoder.conv2.bias",
    "encoders.conv1.weight": "encoder.conv1.weight",  # v1 25 Hz (CosyVoice-300M-25Hz)
    "encoders.conv1.bias": "encoder.conv1.bias",
    "encoders.conv2.weight": "encoder.conv2.weight",
    "encoders.conv2.bias": "encoder.conv2.bias",
    "onnx::Conv_2216": "encoder.conv1.weight",  # v2 (CosyVoice2-0.5B)
    "onnx::Conv_2217": "encoder.conv1.bias",
    "onnx::Conv_2218": "encoder.conv2.weight",
    "onnx::Conv_2219": "encoder.conv2.bias",
    "encoders.positional_embedding": "encoder.positional_embedding",  # v1
    "onnx::MatMul_2536": "quantizer._codebook.project_down.weight",  # v2
    "quantizer.project_in.bias": "quantizer._codebook.project_down.bias",  # v2
}
_ONNX_CODEBOOK_NODE = "/quantizer/rq/model/layers.0/_codebook/Pow_1"  # v1: its initializer is the codebook
_ONNX_RENAMES = (
    ("MatMul", "weight"),
    ("Add_1", "bias"),
    ("Mul", "weight"),
    ("Add", "bias"),
    ("mlp.mlp", "mlp"),
    ("fsmn_block.Conv", "fsmn_block.weight"),
)


def onnx_graph_to_upstream(graph: dict[str, Tensor]) -> dict[str, Tensor]:
    """The graph view of an official ONNX file (see `read_onnx_initializers(graph=True)`) -> upstream keys.

    Follows what upstream's `onnx2torch` relies on: fixed names for the convs, the positional table and
    the v2 projection; LayerNormalization scale/shift by the node's prefix; every other weight named
    after its consuming node (`/blocks.0/attn/query/MatMul` -> `encoder.blocks.0.attn.query.weight`);
    matrices transposed from ONNX's (in, out) MatMul operands, except the positional table.
    """
    named: dict[str, Tensor] = {}
    for key in list(graph):
        tensor = graph.pop(key)
        try:
            node, op, index, init = key.split("|", 3)
        except ValueError:
            raise CheckpointError(
                f"ONNX graph entry {key!r} is not '<node>|<op>|<input>|<initializer>'; read the file with "
                "registry.checkpoint.read_onnx_initializers(path, graph=True) and pass its '@graph' entry"
            ) from None
        if init in _ONNX_FIXED:
            name = _ONNX_FIXED[init]
        elif op == "LayerNormalization":
            if index not in ("1", "2"):
                continue
            name = node.replace("/LayerNormalization", "") + (".weight" if index == "1" else ".bias")
        else:
            name = node
        if tensor.dim() <= 2 and name != "encoder.positional_embedding":
            tensor = tensor.t()
        named[name] = tensor
    out: dict[str, Tensor] = {}
    for name, tensor in named.items():
        if "quantizer" in name:
            if name == _ONNX_CODEBOOK_NODE:
                out["quantizer._codebook.embed"] = tensor
            elif "project_down" in name:
                out[name] = tensor
        elif "positional_embedding" in name or "conv" in name:
            out[name] = tensor
        elif "blocks" in name:
            key = name.lstrip("/").replace("/", ".")
            for old, new in _ONNX_RENAMES:
                key = key.replace(old, new)
            out[f"encoder.{key}"] = tensor
        else:
            raise CheckpointError(
                f"ONNX weight used by node {name!r} is none of the S3Tokenizer weights (convs, positional table, "
                "blocks, quantizer); is this an official speech_tokenizer_v1/v2 file?"
            )
    return out


def config_from_upstream(upstream_config: Any, state: dict[str, Tensor]) -> S3TokenizerConfig:
    """Our config from upstream's `ModelConfig` fields plus its model `name` (v1 50 Hz / 25 Hz / v2)."""
    upstream = dict(upstream_config or {})
    name = upstream.get("name")
    is_v2 = any("fsmn_block" in k or "project_down" in k for k in state)
    if name is None:
        if not is_v2:
            raise ConfigError(
                "v1 S3Tokenizer weights do not tell 50 Hz from 25 Hz: pass upstream_config={'name': "
                "'speech_tokenizer_v1'} (50 Hz, CosyVoice-300M) or {'name': 'speech_tokenizer_v1_25hz'}"
            )
        name = "speech_tokenizer_v2_25hz"
    name = str(name)
    known = ("speech_tokenizer_v1", "speech_tokenizer_v1_25hz", "speech_tokenizer_v2_25hz")
    if name not in known:
        raise ConfigError(f"unknown upstream S3Tokenizer name {name!r}; expected one of {', '.join(known)}")
    if ("v2" in name) != is_v2:
        kind = "v2 (FSMN, FSQ)" if is_v2 else "v1 (VQ)"
        raise ConfigError(f"upstream name {name!r} does not match the weights, which are {kind}")
    common = {
        "n_mels": int(upstream.get("n_mels", 128)),
        "dim": int(upstream.get("n_audio_state", 1280)),
        "heads": int(upstream.get("n_audio_head", 20)),
        "layers": int(upstream.get("n_audio_layer", 6)),
    }
    if is_v2:
        return S3TokenizerConfig(**common, strides=[2, 2], positions="rotary", fsmn_kernel=31, attn_ln_eps=1e-6,
                                 quantizer="fsq", codebook_size=3**8)
    stride = 2 if name == "speech_tokenizer_v1_25hz" else 1
    return S3TokenizerConfig(**common, strides=[stride, 2], positions="table",
                             max_positions=int(upstream.get("n_audio_ctx", 1500)), fsmn_kernel=0,
                             attn_ln_eps=1e-5, quantizer="vq", codebook_size=int(upstream.get("n_codebook_size", 4096)))


def convert_s3tokenizer(state_dict: dict[str, Any], upstream_config: Any = None, **_: Any) -> S3Tokenizer:
    """Build an S3Tokenizer from upstream weights: the community PyTorch state dict (upstream key names,
    e.g. what `s3tokenizer.onnx2torch` saves) or the graph view of an official ONNX file."""
    state: dict[str, Any] = dict(state_dict)
    if ONNX_GRAPH_KEY in state and isinstance(state[ONNX_GRAPH_KEY], dict):
        state = dict(state[ONNX_GRAPH_KEY])
    if state and all("|" in k for k in state):
        state = onnx_graph_to_upstream(state)
    elif not any(k.startswith("encoder.") for k in state):
        raise CheckpointError(
            "these S3Tokenizer weights have neither upstream key names (encoder.*, quantizer.*) nor an ONNX graph "
            f"view (keys like {list(state)[:3]}). ONNX initializer names are anonymous: read the file with "
            "registry.checkpoint.read_checkpoint(path) and pass its '@graph' entry (CLI: --container @graph)."
        )
    config = config_from_upstream(upstream_config, state)
    ours: dict[str, Tensor] = {}
    for key in list(state):
        tensor = state.pop(key)
        if not isinstance(tensor, Tensor):
            continue
        if key == "quantizer._codebook.embed":
            ours["quantizer.codebook"] = tensor
        elif key.startswith("quantizer._codebook.project_down."):
            ours["project_down." + key.rsplit(".", 1)[-1]] = tensor
        else:
            ours[key] = tensor
    tokenizer = S3Tokenizer(config)
    own = tokenizer.state_dict()
    for key, tensor in ours.items():
        if key in own:
            ours[key] = tensor.to(own[key].dtype).contiguous()
    load_state_strict(tokenizer, ours, where="S3Tokenizer upstream weights", assign=True)
    return tokenizer.eval()


register_tokenizer(
    S3Tokenizer,
    variants=("s3tokenizer-v1-50hz", "s3tokenizer-v1-25hz", "s3tokenizer-v2-25hz", "s3tokenizer-tiny"),
)
register_converter("s3tokenizer", convert_s3tokenizer)
