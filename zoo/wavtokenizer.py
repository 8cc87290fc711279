"""WavTokenizer (Ji et al., ICLR 2025, arXiv 2408.16532): 24 kHz audio, one VQ codebook of 4096 codes.

Encoder: EnCodec's SEANet (weight norm folded, `zoo.layers.seanet`), one Euclidean codebook of
`codebook_size` x 512 (`zoo.layers.quantize.VectorQuantizer`), decoder: the Vocos backbone with
WavTokenizer's attention `pos_net` and AdaLayerNorm (`zoo.layers.vocos`) and an ISTFT head computed with
real tensors (`zoo.layers.spectral`), so encoder and decoder both export to ONNX.

Length contract: a clip of N samples gives T = ceil(N / hop) tokens (upstream reflect-pads the last
frame); `decode` trims back to the N recorded in `Tokens.original_size`, while bare ids (e.g. from
`tokens_from_upstream`) decode to T * hop samples as upstream does.

Batches: `encode(x, lengths=...)` takes right-padded clips of different lengths and gives each clip
exactly the tokens it gets alone: every conv pads each clip at its own end (`zoo.layers.seanet`), and
since batched kernels round ~1e-7 differently, a clip with a frame near a tie between two codes is
re-encoded alone. Upstream has no batch support. Decoding a ragged batch masks the padded frames out of every conv,
GroupNorm, the attention block and the iSTFT envelope, so each clip decodes as alone (float rounding aside).

Ids: ours (B, T); upstream's `encode_infer` returns (n_q=1, B, T) (`tokens_to_upstream` /
`tokens_from_upstream` convert). The decoder is conditioned on `bandwidth_id` (AdaLayerNorm row), 0 as in
every upstream inference example.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from registry import register_converter, register_tokenizer
from registry.checkpoint import dig, load_state_strict
from registry.config import plain_config
from registry.errors import CheckpointError, ConfigError, InputError, UnsupportedError
from zoo.audio_batch import check_lengths, resample_clips
from zoo.layers.quantize.vq import VectorQuantizer
from zoo.layers.seanet import SEANetEncoder, SEANetEncoderConfig, convert_encodec_encoder
from zoo.layers.spectral import PADDINGS, ISTFTHead
from zoo.layers.vocos import VocosBackbone, VocosBackboneConfig
from zoo.spec import TokenSpec
from zoo.tokenizer import Tokenizer, _Call, check_ids
from zoo.tokens import Tokens


@dataclass
class WavTokenizerConfig:
    """Hyperparameters; defaults are the published 75-token models (large-speech-75 and siblings)."""

    sample_rate: int = 24000
    encoder: SEANetEncoderConfig = field(default_factory=SEANetEncoderConfig)
    codebook_size: int = 4096
    backbone: VocosBackboneConfig = field(default_factory=VocosBackboneConfig)
    n_fft: int = 1280
    hop_length: int = 320
    padding: str = "same"
    bandwidth_id: int = 0
    # Training of the codebook, as upstream's EnCodec VQ: k-means init, EMA updates, dead-code restart.
    # Without k-means init a fresh codebook is random instead of all zeros (useful for untrained tests).
    kmeans_init: bool = True
    kmeans_iters: int = 200
    ema_decay: float = 0.99
    threshold_dead: float = 2.0
    commitment_weight: float = 1.0
    # Shortest clip `encode` accepts; None means one token's worth (hop_length samples).
    min_samples: int | None = None


class WavTokenizer(Tokenizer):
    """WavTokenizer: mono audio at `sample_rate` <-> one id per `hop_length` samples."""

    family = "wavtokenizer"
    config_class = WavTokenizerConfig
    parity_cases = ("wavtokenizer/a",)  # ../shared/parity/wavtokenizer/a: the large-speech-75 checkpoint layout

    def __init__(self, config: WavTokenizerConfig) -> None:
        super().__init__(config)
        cfg = config
        if cfg.encoder.hop_length != cfg.hop_length:
            raise ConfigError(
                f"the encoder downsamples by {cfg.encoder.hop_length} (product of ratios {list(cfg.encoder.ratios)}) "
                f"but the ISTFT head hops {cfg.hop_length} samples per token; they must be equal"
            )
        if cfg.backbone.input_channels != cfg.encoder.dimension:
            raise ConfigError(
                f"backbone.input_channels ({cfg.backbone.input_channels}) must equal the codebook dimension "
                f"encoder.dimension ({cfg.encoder.dimension})"
            )
        if cfg.codebook_size < 2:
            raise ConfigError(f"codebook_size must be at least 2; got {cfg.codebook_size}")
        if cfg.padding not in PADDINGS:
            raise ConfigError(f"padding must be one of {PADDINGS}; got {cfg.padding!r}")
        adanorm = cfg.backbone.adanorm_num_embeddings
        if adanorm is not None and not 0 <= cfg.bandwidth_id < adanorm:
            raise ConfigError(f"bandwidth_id must lie in [0, {adanorm}); got {cfg.bandwidth_id}")
        self.encoder = SEANetEncoder(cfg.encoder)
        self.quantizer = VectorQuantizer(
            cfg.codebook_size,
            cfg.encoder.dimension,
            metric="euclidean",
            ema_decay=cfg.ema_decay,
            kmeans_init=cfg.kmeans_init,
            kmeans_iters=cfg.kmeans_iters,
            threshold_dead=cfg.threshold_dead,
            commitment_weight=cfg.commitment_weight,
        )
        self.backbone = VocosBackbone(cfg.backbone)
        self.head = ISTFTHead(cfg.backbone.dim, cfg.n_fft, cfg.hop_length, cfg.padding)  # type: ignore[arg-type]

    # -- facts -----------------------------------------------------------------------------------
    @property
    def spec(self) -> TokenSpec:
        cfg = self.config
        return TokenSpec(
            modality="audio",
            kind="discrete",
            codebook_sizes=(cfg.codebook_size,),
            latent_dim=cfg.encoder.dimension,
            token_rate=cfg.sample_rate / cfg.hop_length,
            downsample=(cfg.hop_length,),
            sample_rate=cfg.sample_rate,
            channels=1,
            can_decode=True,
            notes="decode trims to the input length recorded in Tokens; bare ids decode to T * hop samples",
        )

    @property
    def min_samples(self) -> int:
        return int(self.config.min_samples or self.config.hop_length)

    def num_tokens(self, samples: int) -> int:
        return math.ceil(samples / self.config.hop_length)

    # -- tensor paths (exported) -----------------------------------------------------------------
    def latent(self, audio: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, 1, N) -> pre-quantization latent (B, T, dim), channels last."""
        return self.encoder(audio, lengths).transpose(1, 2)

    def encode_ids(self, x: Tensor) -> Tensor:
        """(B, 1, N) waveform -> (B, ceil(N / hop)) int64 ids."""
        return self.quantizer.encode(self.latent(x))

    def encode_ids_ragged(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Right-padded clips (B, 1, N) with sample counts (B,) -> ids (B, ceil(N / hop)), 0 past each clip.

        Each clip's ids are computed as if it were alone (up to float rounding of batched kernels); the
        graph of `ragged_encoder_module()` for batched serving in onnxruntime.
        """
        ids = self.quantizer.encode(self.latent(x, lengths))
        frames = (lengths.to(ids.device) + self.config.hop_length - 1) // self.config.hop_length
        keep = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0) < frames.unsqueeze(1)
        return torch.where(keep, ids, torch.zeros_like(ids))

    def ragged_encoder_module(self) -> torch.nn.Module:
        """(audio (B, 1, N), lengths (B,) int64) -> ids: `encode_ids_ragged` as an exportable module."""
        return _Call(self, "encode_ids_ragged")

    def decode_ids(self, ids: Tensor) -> Tensor:
        """(B, T) ids -> (B, 1, T * hop) waveform (no trimming)."""
        features = self.quantizer.lookup(ids).transpose(1, 2)
        return self.decode_features(features)

    def decode_ids_ragged(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """Ids (B, T) with tokens per item (B,) -> (B, 1, T * hop), item b exact up to lengths[b] * hop samples.

        The graph of `ragged_decoder_module()`; samples past an item's end are unspecified.
        """
        return self.decode_features(self.quantizer.lookup(ids).transpose(1, 2), None, lengths)

    def ragged_decoder_module(self) -> torch.nn.Module:
        """(ids (B, T), lengths (B,) int64) -> audio: `decode_ids_ragged` as an exportable module."""
        return _Call(self, "decode_ids_ragged")

    def decode_features(
        self, features: Tensor, bandwidth_id: int | None = None, lengths: Tensor | None = None
    ) -> Tensor:
        """Codebook features (B, dim, T) -> (B, 1, T * hop): upstream's `decode(features)`.

        With `lengths` (B,) (tokens per item of a ragged batch) each item's first lengths[b] * hop samples
        are what decoding it alone gives: the backbone masks convs, GroupNorms and attention per item.
        """
        cond = self.config.bandwidth_id if bandwidth_id is None else int(bandwidth_id)
        return self.head(self.backbone(features, cond, lengths), lengths).unsqueeze(1)

    # -- user API --------------------------------------------------------------------------------
    def encode(
        self,
        x: Any,
        lengths: Sequence[int] | Tensor | None = None,
        sample_rate: int | None = None,
        **kwargs: Any,
    ) -> Tokens:
        """Audio (N,), (1, N) or (B, 1, N) in [-1, 1] at `sample_rate` (default: the model's 24 kHz) -> Tokens.

        Audio at another rate is resampled to the model's rate with a warning (`modalities.resample`).
        `lengths` (B,) gives each clip's sample count in a right-padded batch; each clip gets the ids it
        gets alone. Stereo is refused (downmix first); clips shorter than `min_samples` are refused.
        """
        if kwargs:
            raise InputError(f"unknown encode option(s) {sorted(kwargs)}; wavtokenizer takes lengths= and sample_rate=")
        wave = self.prepare(x)
        batch, _, total = wave.shape
        counts = check_lengths(lengths, batch, total)
        if sample_rate is not None and int(sample_rate) != self.config.sample_rate:
            wave, counts = self._resample(wave, counts, sample_rate)
            total = wave.shape[-1]
        short = [c for c in counts if c < self.min_samples]
        if short:
            raise InputError(
                f"audio too short: {min(short)} samples, wavtokenizer needs at least {self.min_samples} "
                f"({self.min_samples / self.config.sample_rate * 1000:.1f} ms at {self.config.sample_rate} Hz, "
                "one token); pad the clip with silence or leave it out"
            )
        ragged = any(c != total for c in counts)
        n = torch.tensor(counts, dtype=torch.long)
        frames = [self.num_tokens(c) for c in counts]
        with torch.no_grad():
            wave = wave[..., : max(counts)]
            latent = self.latent(wave, n.to(wave.device) if ragged else None)
            ids = self.quantizer.encode(latent)
            if batch > 1:
                # Batched kernels round differently from unbatched ones (~1e-7); where that could flip
                # a nearest code, the clip is encoded alone so its tokens are exactly its solo tokens.
                for b in self._near_ties(latent, frames):
                    ids[b, : frames[b]] = self.encode_ids(wave[b : b + 1, :, : counts[b]])[0]
        tokens_per_clip = torch.tensor(frames, dtype=torch.long)
        if ragged:
            mask = torch.arange(ids.shape[1]).unsqueeze(0) < tokens_per_clip.unsqueeze(1)
            ids = torch.where(mask.to(ids.device), ids, torch.zeros_like(ids))
        return self.make_tokens(
            ids,
            grid=(ids.shape[1],),
            lengths=tokens_per_clip,
            original_size=n,
            meta={"sample_rate": self.config.sample_rate, "token_rate": self.spec.token_rate},
        )

    def decode(self, tokens: Tokens | Tensor, bandwidth_id: int | None = None, **kwargs: Any) -> Tensor:
        """Tokens or ids (B, T) -> audio (B, 1, N).

        Tokens from `encode` are trimmed to each clip's recorded sample count (items shorter than the
        longest are zero-padded past their end); bare ids give T * hop samples.
        """
        if kwargs:
            raise InputError(f"unknown decode option(s) {sorted(kwargs)}; wavtokenizer takes bandwidth_id=")
        if isinstance(tokens, Tokens):
            if tokens.ids is None:
                raise InputError("these Tokens hold no ids; wavtokenizer decodes discrete ids only")
            ids, counts, samples = tokens.ids, tokens.lengths, tokens.original_size
        else:
            ids, counts, samples = tokens, None, None
        ids = torch.as_tensor(ids)
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        if ids.dim() != 2:
            raise InputError(
                f"wavtokenizer ids must be (B, T) (or (T,)); got shape {tuple(ids.shape)}. Upstream's "
                "(1, B, T) codes go through tokens_from_upstream first."
            )
        ids = check_ids(ids, self.config.codebook_size).to(self.device)
        adanorm = self.config.backbone.adanorm_num_embeddings
        if bandwidth_id is not None and adanorm is not None and not 0 <= int(bandwidth_id) < adanorm:
            raise InputError(f"bandwidth_id must lie in [0, {adanorm}); got {bandwidth_id}")
        batch, steps = ids.shape
        frames = [steps] * batch if counts is None else [int(c) for c in torch.as_tensor(counts).reshape(-1)]
        if len(frames) != batch or min(frames) < 1 or max(frames) > steps:
            raise InputError(f"Tokens.lengths {frames} do not fit ids of shape {tuple(ids.shape)}")
        hop = self.config.hop_length
        keep = [f * hop for f in frames] if samples is None else [int(s) for s in torch.as_tensor(samples).reshape(-1)]
        if any(k > f * hop or k < 1 for k, f in zip(keep, frames, strict=True)):
            raise InputError(
                f"Tokens.original_size {keep} does not fit {frames} tokens of {hop} samples; "
                "were these Tokens edited or made by another tokenizer?"
            )
        longest = max(frames)
        with torch.no_grad():
            features = self.quantizer.lookup(ids[:, :longest]).transpose(1, 2)
            ragged = None if min(frames) == longest else torch.tensor(frames, device=self.device)
            audio = self.decode_features(features, bandwidth_id, ragged)
        out = audio[..., : max(keep)].clone()
        for b in range(batch):
            out[b, :, keep[b] :] = 0.0
        return out

    def embed(self, ids: Tensor) -> Tensor:
        """Code vectors (B, T, dim) of ids (B, T): the features upstream's `codes_to_features` gives (transposed)."""
        return self.quantizer.lookup(check_ids(ids, self.config.codebook_size).to(self.device))

    def forward(self, x: Tensor) -> dict[str, Any]:
        """Training step on (B, 1, N): reconstruction (B, 1, T * hop), ids, quantizer losses and usage."""
        latent = self.latent(x)
        q = self.quantizer(latent)
        audio = self.decode_features(q.quantized.transpose(1, 2))
        return {"reconstruction": audio, "ids": q.ids, "losses": q.losses, "usage": q.usage, "latent": latent}

    # -- upstream id layout ----------------------------------------------------------------------
    def tokens_to_upstream(self, tokens: Tokens) -> Tensor:
        """(B, T) -> upstream's (n_q=1, B, T) codes."""
        if tokens.ids is None:
            raise InputError("these Tokens hold no ids")
        return tokens.ids.unsqueeze(0)

    def tokens_from_upstream(self, ids: Any, **kwargs: Any) -> Tokens:
        """Upstream codes (1, B, T), (1, T) or (T,) -> Tokens with no recorded length (decode gives T * hop)."""
        if kwargs:
            raise InputError(f"unknown option(s) {sorted(kwargs)} for tokens_from_upstream")
        codes = torch.as_tensor(ids)
        if codes.dim() == 3:
            if codes.shape[0] != 1:
                raise InputError(
                    f"upstream codes (n_q, B, T) must have n_q == 1 for WavTokenizer; got shape {tuple(codes.shape)}"
                )
            codes = codes[0]
        elif codes.dim() == 2:
            if codes.shape[0] != 1:
                raise InputError(
                    f"2-D upstream codes are (n_q, T) with n_q == 1; got shape {tuple(codes.shape)}. "
                    "For a batch pass (1, B, T)."
                )
        elif codes.dim() == 1:
            codes = codes.unsqueeze(0)
        else:
            raise InputError(f"upstream codes must be (1, B, T), (1, T) or (T,); got shape {tuple(codes.shape)}")
        codes = check_ids(codes, self.config.codebook_size)
        return self.make_tokens(
            codes,
            grid=(codes.shape[1],),
            meta={"sample_rate": self.config.sample_rate, "token_rate": self.spec.token_rate},
        )

    # -- helpers -----------------------------------------------------------------------------------
    def _near_ties(self, latent: Tensor, frames: list[int], rel: float = 1e-4, rows: int = 2048) -> list[int]:
        """Clips with a frame whose two nearest codes are closer than `rel` x (|z|^2 + max |e|^2).

        That bound is far above float32 rounding of the distances (~1e-6 of it), so any id that batching
        could change is caught; clips without such frames keep their batched ids.
        """
        codes = self.quantizer.codebook.detach().float()
        code_sq = codes.pow(2).sum(1)
        top = float(code_sq.max())
        flagged = []
        for b, count in enumerate(frames):
            x = latent[b, :count].float()
            for start in range(0, count, rows):
                part = x[start : start + rows]
                part_sq = part.pow(2).sum(1, keepdim=True)
                dist = torch.addmm(code_sq.unsqueeze(0), part, codes.T, alpha=-2).add_(part_sq)
                best = dist.topk(2, dim=1, largest=False).values
                if bool(((best[:, 1] - best[:, 0]) <= rel * (part_sq[:, 0] + top)).any()):
                    flagged.append(b)
                    break
        return flagged

    def _resample(self, wave: Tensor, counts: list[int], rate: int) -> tuple[Tensor, list[int]]:
        return resample_clips(wave, counts, rate, self.config.sample_rate, "wavtokenizer", warn=True)


# -- converter ---------------------------------------------------------------------------------------

_ENCODER = "feature_extractor.encodec.encoder."
_CODEBOOK = "feature_extractor.encodec.quantizer.vq.layers.0._codebook."
# Training-only parts of the Lightning module: discriminators, losses, the unused EnCodec decoder.
_DROPPED = (
    "feature_extractor.encodec.decoder.",
    "multiperioddisc.",
    "multiresddisc.",
    "dac.",
    "dacdiscriminator.",
    "melspec_loss.",
)


def _init_args(node: Any, what: str) -> dict[str, Any]:
    if not isinstance(node, Mapping):
        raise ConfigError(f"upstream config: `{what}` must be a mapping with class_path/init_args; got {node!r}")
    return dict(node.get("init_args", node))


def _class_name(node: Any) -> str:
    return str(node.get("class_path", "")).rsplit(".", 1)[-1] if isinstance(node, Mapping) else ""


def config_from_upstream(upstream_config: Any) -> WavTokenizerConfig:
    """Our config from upstream's Lightning config: the whole YAML, its `model`, or `model.init_args`."""
    if upstream_config is None:
        raise ConfigError(
            "wavtokenizer's converter needs the upstream config (feature_extractor / backbone / head init_args, "
            "as in the upstream YAML's model.init_args); registered variants carry it under upstream.config"
        )
    cfg: Any = plain_config(upstream_config)
    if "model" in cfg:
        cfg = cfg["model"]
    if "init_args" in cfg and "feature_extractor" not in cfg:
        cfg = cfg["init_args"]
    for part in ("feature_extractor", "backbone", "head"):
        if part not in cfg:
            raise ConfigError(f"upstream config has no `{part}` (keys: {sorted(cfg)}); pass model.init_args")
    fe = _init_args(cfg["feature_extractor"], "feature_extractor")
    bb = _init_args(cfg["backbone"], "backbone")
    hd = _init_args(cfg["head"], "head")
    classes = (("feature_extractor", "EncodecFeatures"), ("backbone", "VocosBackbone"), ("head", "ISTFTHead"))
    for part, expected in classes:
        name = _class_name(cfg[part])
        if name and name != expected:
            raise UnsupportedError(f"upstream {part} class {name} is not supported (wavtokenizer converts {expected})")
    if int(fe.get("num_quantizers", 1)) != 1:
        raise UnsupportedError(f"num_quantizers={fe['num_quantizers']}: only single-codebook WavTokenizer is supported")
    if fe.get("encodec_model", "encodec_24khz") != "encodec_24khz":
        raise UnsupportedError(f"encodec_model {fe['encodec_model']!r}: only 'encodec_24khz' exists upstream")
    ratios = [int(r) for r in fe.get("dowmsamples", [6, 5, 5, 4])]
    adanorm = bb.get("adanorm_num_embeddings")
    scale = bb.get("layer_scale_init_value")
    return WavTokenizerConfig(
        sample_rate=int(cfg.get("sample_rate", 24000)),
        encoder=SEANetEncoderConfig(ratios=ratios),
        codebook_size=int(fe.get("vq_bins", 16384)),
        kmeans_iters=int(fe.get("vq_kmeans", 800)),
        backbone=VocosBackboneConfig(
            input_channels=int(bb["input_channels"]),
            dim=int(bb["dim"]),
            intermediate_dim=int(bb["intermediate_dim"]),
            num_layers=int(bb["num_layers"]),
            layer_scale_init_value=None if scale is None else float(scale),
            adanorm_num_embeddings=None if adanorm is None else int(adanorm),
        ),
        n_fft=int(hd["n_fft"]),
        hop_length=int(hd["hop_length"]),
        padding=str(hd.get("padding", "same")),
    )


def convert_wavtokenizer(state_dict: dict[str, Tensor], upstream_config: Any = None, **kwargs: Any) -> WavTokenizer:
    """Upstream Lightning checkpoint state (`["state_dict"]`, or the whole .ckpt dict) -> WavTokenizer.

    Keeps the encoder (weight norm folded), the codebook (with its EMA buffers, so training can go
    on) and the decoder; drops discriminators, loss buffers and the unused EnCodec decoder. The dict
    is consumed (keys popped) to keep one copy of the weights in memory.
    """
    if kwargs:
        raise ConfigError(f"unknown converter option(s) {sorted(kwargs)}")
    state = state_dict
    if not any(isinstance(v, Tensor) for v in state.values()):
        state = dig(state, None, where="wavtokenizer checkpoint")
    config = config_from_upstream(upstream_config)
    out: dict[str, Tensor] = {}
    if not any(k.startswith(_ENCODER) for k in state):
        raise CheckpointError(
            "no `feature_extractor.encodec.encoder.*` keys: this is not a WavTokenizer Lightning checkpoint "
            f"(first keys: {list(state)[:5]})"
        )
    for key, value in convert_encodec_encoder(state, _ENCODER, config.encoder).items():
        out[f"encoder.{key}"] = value
    codebook = {"embed": "codebook", "embed_avg": "embed_avg", "cluster_size": "cluster_size"}
    for theirs, ours in codebook.items():
        if _CODEBOOK + theirs not in state:
            raise CheckpointError(f"missing the codebook tensor {_CODEBOOK}{theirs}")
        out[f"quantizer.{ours}"] = state.pop(_CODEBOOK + theirs)
    inited = state.pop(_CODEBOOK + "inited", None)
    if inited is not None and not bool(inited.reshape(-1)[0]):
        raise CheckpointError("the checkpoint's codebook was never initialised (`inited` is 0): it holds no codes")
    for key in list(state):
        if key.startswith(("backbone.", "head.")):
            out[key] = state.pop(key)
        elif key.startswith(_DROPPED):
            del state[key]
    if state:
        left = sorted(state)
        raise CheckpointError(
            f"unmapped upstream keys ({len(left)}): {', '.join(left[:10])}. The checkpoint does not match "
            "the WavTokenizer layout this converter knows."
        )
    out = {k: v.float() if v.is_floating_point() else v for k, v in out.items()}
    model = WavTokenizer(config)
    load_state_strict(model, out, where="WavTokenizer upstream checkpoint", assign=True)
    model.eval()
    return model


register_tokenizer(
    WavTokenizer,
    variants=(
        "wavtokenizer-large-speech-75",
        "wavtokenizer-large-unify-40",
        "wavtokenizer-medium-speech-75",
        "wavtokenizer-medium-speech-75-v1",
        "wavtokenizer-small-40",
        "wavtokenizer-small-75",
        "wavtokenizer-tiny",
    ),
)
register_converter("wavtokenizer", convert_wavtokenizer)
