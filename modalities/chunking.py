"""Cutting long media into pieces a tokenizer accepts, batching them, and stitching decoded pieces back.

Causal video tokenizers take 1 + k*n frames (one lone first frame, then groups of n, the temporal
compression); long audio is cut into overlapping windows and cross-faded back together. Every cut
remembers the padding it added so the stitched result has exactly the input's length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from registry.errors import ConfigError, InputError


def causal_length(frames: int, temporal_factor: int) -> int:
    """The smallest 1 + k*n >= `frames` (n = `temporal_factor`): what a causal video tokenizer accepts."""
    if temporal_factor < 1:
        raise ConfigError(f"temporal_factor must be >= 1, got {temporal_factor}.")
    if frames < 1:
        raise InputError(f"a video needs at least one frame, got {frames}.")
    return 1 + -(-(frames - 1) // temporal_factor) * temporal_factor


def _pad_time(x: torch.Tensor, extra: int, mode: str) -> torch.Tensor:
    """Append `extra` frames on axis 2 of (B, C, T, H, W), repeating the last frame or zeros (black=-1)."""
    if extra == 0:
        return x
    if mode == "replicate":
        tail = x[:, :, -1:].expand(-1, -1, extra, -1, -1)
    elif mode == "black":
        tail = torch.full((*x.shape[:2], extra, *x.shape[3:]), -1.0, dtype=x.dtype, device=x.device)
    else:
        raise ConfigError(f"video padding mode must be 'replicate' or 'black', got {mode!r}.")
    return torch.cat([x, tail], dim=2)


def pad_to_causal(
    x: torch.Tensor, temporal_factor: int, *, mode: str = "replicate"
) -> tuple[torch.Tensor, int]:
    """Pad (B, C, T, H, W) at the tail to 1 + k*n frames; returns the tensor and the frames added."""
    _check_video(x)
    extra = causal_length(x.shape[2], temporal_factor) - x.shape[2]
    return _pad_time(x, extra, mode), extra


def _check_video(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 5:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"expected a canonical video (B, C, T, H, W), got {shape}.")
    if x.shape[2] < 1:
        raise InputError("the video has no frames (T = 0).")


@dataclass(frozen=True)
class VideoClips:
    """Clips cut from a (B, C, T, H, W) video, stacked batch-major as (B * K, C, L, H, W)."""

    clips: torch.Tensor
    batch: int
    frames: int
    tail_padding: int

    @property
    def clips_per_video(self) -> int:
        return self.clips.shape[0] // self.batch

    def merge(self, decoded: torch.Tensor) -> torch.Tensor:
        """Concatenate decoded clips back to (B, C, T, H, W), dropping the padded tail frames."""
        if decoded.ndim != 5 or decoded.shape[0] != self.clips.shape[0]:
            raise InputError(
                f"merge expects {self.clips.shape[0]} decoded clips shaped (N, C, L, H, W), got "
                f"{tuple(decoded.shape)}."
            )
        k = self.clips_per_video
        per_video = decoded.reshape(self.batch, k, *decoded.shape[1:])
        joined = torch.cat(list(per_video.unbind(1)), dim=2)
        return joined[:, :, : self.frames]


def chunk_video(x: torch.Tensor, clip_frames: int, *, mode: str = "replicate") -> VideoClips:
    """Cut (B, C, T, H, W) into consecutive clips of `clip_frames` (e.g. 1 + k*n), padding the last clip."""
    _check_video(x)
    if clip_frames < 1:
        raise ConfigError(f"clip_frames must be >= 1, got {clip_frames}.")
    b, _, t = x.shape[:3]
    k = -(-t // clip_frames)
    extra = k * clip_frames - t
    padded = _pad_time(x, extra, mode)
    clips = padded.reshape(b, padded.shape[1], k, clip_frames, *padded.shape[3:]).transpose(1, 2)
    clips = clips.reshape(b * k, padded.shape[1], clip_frames, *padded.shape[3:])
    return VideoClips(clips=clips.contiguous(), batch=b, frames=t, tail_padding=extra)


# --------------------------------------------------------------------------------------------- audio


@dataclass(frozen=True)
class AudioChunks:
    """Overlapping windows of one (1, C, N) signal as (K, C, L), with each window's valid length."""

    chunks: torch.Tensor
    lengths: torch.Tensor
    starts: torch.Tensor
    total: int
    overlap: int

    def merge(self, decoded: torch.Tensor) -> torch.Tensor:
        """Overlap-add decoded windows with linear cross-fades back to (1, C, total)."""
        if decoded.ndim != 3 or decoded.shape[0] != self.chunks.shape[0]:
            raise InputError(
                f"merge expects {self.chunks.shape[0]} decoded chunks shaped (K, C, L), got "
                f"{tuple(decoded.shape)}."
            )
        c = decoded.shape[1]
        out = torch.zeros(c, self.total, dtype=torch.float64, device=decoded.device)
        weight = torch.zeros(self.total, dtype=torch.float64, device=decoded.device)
        for i in range(decoded.shape[0]):
            start, length = int(self.starts[i]), int(self.lengths[i])
            length = min(length, decoded.shape[-1])
            w = torch.ones(length, dtype=torch.float64, device=decoded.device)
            ramp = min(self.overlap, length)
            if ramp and i > 0:
                w[:ramp] = torch.arange(1, ramp + 1, dtype=torch.float64, device=w.device) / (ramp + 1)
            if ramp and i < decoded.shape[0] - 1:
                w[-ramp:] = torch.minimum(
                    w[-ramp:], torch.arange(ramp, 0, -1, dtype=torch.float64, device=w.device) / (ramp + 1)
                )
            out[:, start : start + length] += decoded[i, :, :length].double() * w
            weight[start : start + length] += w
        return (out / weight.clamp_min(1e-12)).float()[None]


def chunk_audio(x: torch.Tensor, chunk: int, *, overlap: int = 0) -> AudioChunks:
    """Cut a (1, C, N) / (C, N) signal into windows of `chunk` samples overlapping by `overlap`.

    The last window is zero-padded to `chunk`; `lengths` holds each window's real length so a
    model can mask the padding, and `merge` cross-fades decoded windows back together.
    """
    if x.ndim == 3:
        if x.shape[0] != 1:
            raise InputError(f"chunk_audio takes one signal (1, C, N), got a batch of {x.shape[0]}.")
        x = x[0]
    if x.ndim != 2:
        raise InputError(f"expected audio (1, C, N) or (C, N), got shape {tuple(x.shape)}.")
    n = x.shape[-1]
    if n == 0:
        raise InputError("cannot chunk audio with 0 samples.")
    if chunk < 1 or not 0 <= overlap < chunk:
        raise ConfigError(f"need chunk >= 1 and 0 <= overlap < chunk, got chunk={chunk}, overlap={overlap}.")
    hop = chunk - overlap
    starts = list(range(0, max(n - overlap, 1), hop))
    pieces, lengths = [], []
    for s in starts:
        piece = x[:, s : s + chunk]
        lengths.append(piece.shape[-1])
        if piece.shape[-1] < chunk:
            piece = torch.nn.functional.pad(piece, (0, chunk - piece.shape[-1]))
        pieces.append(piece)
    return AudioChunks(
        chunks=torch.stack(pieces),
        lengths=torch.tensor(lengths),
        starts=torch.tensor(starts),
        total=n,
        overlap=overlap,
    )


def batch_audio(signals: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (1, C, N_i) or (C, N_i) signals with zeros into (B, C, max N) plus their lengths."""
    if not signals:
        raise InputError("batch_audio needs at least one signal.")
    flat = [s[0] if s.ndim == 3 and s.shape[0] == 1 else s for s in signals]
    channels = {s.shape[0] for s in flat if s.ndim == 2}
    if any(s.ndim != 2 for s in flat) or len(channels) != 1:
        shapes = [tuple(s.shape) for s in signals]
        raise InputError(
            f"batch_audio needs (C, N) signals with one channel count, got shapes {shapes}; "
            "apply the same channels= policy when loading."
        )
    lengths = torch.tensor([s.shape[-1] for s in flat])
    out = flat[0].new_zeros(len(flat), flat[0].shape[0], int(lengths.max()))
    for i, s in enumerate(flat):
        out[i, :, : s.shape[-1]] = s
    return out, lengths


def unbatch_audio(x: torch.Tensor, lengths: torch.Tensor, scale: float = 1.0) -> list[torch.Tensor]:
    """Split (B, C, N) back into (1, C, length_i) signals; `scale` is output rate / input rate."""
    if x.ndim != 3 or x.shape[0] != len(lengths):
        raise InputError(f"unbatch_audio: {len(lengths)} lengths for a batch shaped {tuple(x.shape)}.")
    return [x[i : i + 1, :, : round(int(n) * scale)] for i, n in enumerate(lengths)]
