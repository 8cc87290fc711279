"""Codebook vector quantization (Euclidean or cosine), with the training machinery of EnCodec-style VQ."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from registry.errors import ConfigError
from zoo.layers.quantize.base import Quantizer, QuantizerOutput, check_ids, check_latents
from zoo.layers.quantize.search import Metric, nearest_code
from zoo.layers.quantize.training import (
    Gradient,
    ema_update_,
    kmeans,
    restart_dead_codes_,
    straight_or_rotated,
)
from zoo.layers.quantize.usage import CodebookUsage


class VectorQuantizer(Quantizer):
    """One codebook `codebook` (K, D); ids are int64 of shape (...) for latents (..., D).

    Search variants, to match each upstream exactly:
      * `metric="euclidean"` (EnCodec / WavTokenizer / XY-Tokenizer): argmin of |z|^2 - 2 z.e + |e|^2.
      * `normalize_codes=True` (ViT-VQGAN-style l2 codes, OmniTokenizer, TokenFlow): z and codes are
        l2-normalised, then the Euclidean search; `decode` returns normalised codes.
      * `metric="cosine"`: argmax of the normalised dot product; `decode` returns normalised codes.
      * `normalize_inputs=True` alone (S3Tokenizer v1 upstream): only z is l2-normalised before the
        Euclidean search against the raw codebook; `decode` returns raw codes.
      * `normalized_decode=False` with normalised search (MOSS-Audio-Tokenizer): decode raw codes.

    Training (only when `self.training`): k-means init on the first batch when `kmeans_init` and not
    yet initialised (a loaded or converted codebook counts as initialised, and inference never runs
    k-means), EMA codebook updates when `ema_decay` is set (else a codebook loss), dead-code restart
    when `threshold_dead > 0`, commitment loss, and straight-through or rotation-trick gradients.
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        metric: Metric = "euclidean",
        normalize_codes: bool = False,
        ema_decay: float | None = None,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        threshold_dead: float = 0.0,
        commitment_weight: float = 0.25,
        gradient: Gradient = "ste",
        *,
        normalize_inputs: bool | None = None,
        normalized_decode: bool | None = None,
        codebook_weight: float = 1.0,
        epsilon: float = 1e-5,
        usage_decay: float = 0.99,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if metric not in ("euclidean", "cosine"):
            raise ConfigError(f"metric must be 'euclidean' or 'cosine'; got {metric!r}.")
        if gradient not in ("ste", "rotation"):
            raise ConfigError(f"gradient must be 'ste' or 'rotation'; got {gradient!r}.")
        if codebook_size < 1 or dim < 1:
            raise ConfigError(f"codebook_size and dim must be positive; got {codebook_size} and {dim}.")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ConfigError(f"ema_decay must lie in (0, 1) or be None; got {ema_decay}.")
        self.codebook_size = int(codebook_size)
        self.dim = int(dim)
        self.metric: Metric = metric
        self.normalize_codes = bool(normalize_codes or metric == "cosine")
        self.normalize_inputs = self.normalize_codes if normalize_inputs is None else bool(normalize_inputs)
        self.normalized_decode = (
            self.normalize_codes if normalized_decode is None else bool(normalized_decode)
        )
        self.ema_decay = ema_decay
        self.kmeans_init = kmeans_init
        self.kmeans_iters = kmeans_iters
        self.threshold_dead = threshold_dead
        self.commitment_weight = commitment_weight
        self.codebook_weight = codebook_weight
        self.gradient: Gradient = gradient
        self.epsilon = epsilon
        self.usage_decay = usage_decay
        self.chunk_size = chunk_size

        init = torch.empty(codebook_size, dim)
        if kmeans_init:
            init.zero_()
        else:
            nn.init.kaiming_uniform_(init, a=math.sqrt(5))
        if ema_decay is None:
            self.codebook = nn.Parameter(init)
        else:
            self.register_buffer("codebook", init)
            self.register_buffer("embed_avg", init.clone())
        tracks_usage = ema_decay is not None or threshold_dead > 0
        usage = torch.zeros(codebook_size) if tracks_usage else None
        self.register_buffer("cluster_size", usage, persistent=ema_decay is not None)
        # Not saved: a loaded codebook is initialised by definition (see _load_from_state_dict).
        self.register_buffer("initialized", torch.tensor(not kmeans_init), persistent=False)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "codebook" in state_dict:
            self.initialized.fill_(True)

    def extra_repr(self) -> str:
        return (
            f"codebook_size={self.codebook_size}, dim={self.dim}, metric={self.metric!r}, "
            f"normalize_codes={self.normalize_codes}, ema_decay={self.ema_decay}"
        )

    # -- inference path ---------------------------------------------------------------------------

    def search_input(self, z: Tensor) -> Tensor:
        """The latents as searched: float, l2-normalised when `normalize_inputs`."""
        x = z if z.dtype in (torch.float32, torch.float64) else z.float()
        return F.normalize(x, dim=-1) if self.normalize_inputs else x

    def search_codes(self) -> Tensor:
        return F.normalize(self.codebook, dim=-1) if self.normalize_codes else self.codebook

    def decode_codes(self) -> Tensor:
        return F.normalize(self.codebook, dim=-1) if self.normalized_decode else self.codebook

    def search(self, x: Tensor) -> Tensor:
        """Ids for already prepared latents (see `search_input`)."""
        codes = self.search_codes()
        if self.metric == "cosine":
            return nearest_code(x, codes, "cosine", self.chunk_size, normalized=True)
        return nearest_code(x, codes, "euclidean", self.chunk_size)

    def encode(self, z: Tensor) -> Tensor:
        """Latents (..., dim) -> int64 ids (...)."""
        check_latents(z, self.dim)
        return self.search(self.search_input(z))

    def decode(self, ids: Tensor) -> Tensor:
        """Integer ids (...) in [0, codebook_size) -> code vectors (..., dim)."""
        check_ids(ids, self.codebook_size)
        return self.lookup(ids)

    def lookup(self, ids: Tensor) -> Tensor:
        """`decode` without the input checks, for callers that validated the ids already."""
        return F.embedding(ids.long(), self.decode_codes())

    # -- training path ----------------------------------------------------------------------------

    def forward(self, z: Tensor) -> QuantizerOutput:
        check_latents(z, self.dim)
        x = self.search_input(z)
        if self.training and self.kmeans_init and not bool(self.initialized):
            self._initialize(x.reshape(-1, self.dim))
        ids = self.search(x)
        q = F.embedding(ids, self.decode_codes())
        losses: dict[str, Tensor] = {}
        if self.training:
            losses = self._losses(x, q)
            self._update_codebook(x.reshape(-1, self.dim), ids.reshape(-1))
            quantized = straight_or_rotated(x, q, self.gradient)
        else:
            quantized = q
        usage = CodebookUsage.from_ids(ids, self.codebook_size) if ids.numel() else None
        return QuantizerOutput(quantized=quantized, ids=ids, losses=losses, usage=usage)

    def _losses(self, x: Tensor, q: Tensor) -> dict[str, Tensor]:
        losses: dict[str, Tensor] = {}
        if self.commitment_weight > 0:
            losses["commitment"] = self.commitment_weight * F.mse_loss(x, q.detach())
        if self.ema_decay is None and self.codebook_weight > 0:
            losses["codebook"] = self.codebook_weight * F.mse_loss(q, x.detach())
        return losses

    @torch.no_grad()
    def _initialize(self, samples: Tensor) -> None:
        metric: Metric = "cosine" if self.normalize_codes else "euclidean"
        means, counts = kmeans(samples, self.codebook_size, self.kmeans_iters, metric)
        self.codebook.data.copy_(means)
        if self.ema_decay is not None:
            self.embed_avg.copy_(means * counts.unsqueeze(1))
        if self.cluster_size is not None:
            self.cluster_size.copy_(counts)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update_codebook(self, samples: Tensor, ids: Tensor) -> None:
        samples = samples.detach()
        if self.ema_decay is not None:
            ema_update_(
                self.codebook, self.cluster_size, self.embed_avg, samples, ids, self.ema_decay, self.epsilon
            )
        elif self.cluster_size is not None:
            counts = torch.bincount(ids, minlength=self.codebook_size).to(self.cluster_size.dtype)
            self.cluster_size.mul_(self.usage_decay).add_(counts, alpha=1 - self.usage_decay)
        if self.threshold_dead > 0 and self.cluster_size is not None:
            embed_avg = self.embed_avg if self.ema_decay is not None else None
            restart_dead_codes_(
                self.codebook.data, self.cluster_size, samples, self.threshold_dead, embed_avg
            )
