"""Two codebooks sharing one index (TokenFlow): one id picks a semantic code and a pixel code together."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from registry.errors import ConfigError
from zoo.layers.quantize.base import Quantizer, QuantizerOutput, check_ids, check_latents
from zoo.layers.quantize.search import DEFAULT_CHUNK_SIZE, chunked_argmin
from zoo.layers.quantize.training import straight_or_rotated
from zoo.layers.quantize.usage import CodebookUsage


def _tokenflow_distance(x: Tensor, x_sq: Tensor, codes: Tensor, code_sq: Tensor) -> Tensor:
    """|x|^2 + |e|^2 - 2 x.e in TokenFlow's order of operations."""
    return (x_sq + code_sq) - 2 * (x @ codes.T)


class DualCodebookVQ(Quantizer):
    """Latents (..., dim_a + dim_b) = [part a | part b]; ids int64 (...) index `codebook_a` and `codebook_b`.

    id = argmin over k of w_a * d_a(k) + w_b * d_b(k), each d the squared Euclidean distance of its
    part (TokenFlow: semantic 32768 x 32 and pixel 32768 x 8, weights 1 and 1, both parts and both
    codebooks l2-normalised when `l2_norm`). `decode` returns the concatenated (normalised) code
    vectors; `decode_pair` and the output `extras` ("codes_a", "codes_b") give them apart.
    """

    def __init__(
        self,
        codebook_size: int,
        dim_a: int,
        dim_b: int,
        weights: Sequence[float] = (1.0, 1.0),
        l2_norm: bool = True,
        commitment_weight: float = 0.25,
        codebook_weight: float = 1.0,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if len(weights) != 2:
            raise ConfigError(f"weights must hold two numbers (part a, part b); got {list(weights)}.")
        self.codebook_size = int(codebook_size)
        self.dim_a, self.dim_b = int(dim_a), int(dim_b)
        self.dim = self.dim_a + self.dim_b
        self.weights = (float(weights[0]), float(weights[1]))
        self.l2_norm = l2_norm
        self.commitment_weight = commitment_weight
        self.codebook_weight = codebook_weight
        self.chunk_size = chunk_size or DEFAULT_CHUNK_SIZE
        self.codebook_a = nn.Parameter(
            torch.empty(codebook_size, dim_a).uniform_(-1 / codebook_size, 1 / codebook_size)
        )
        self.codebook_b = nn.Parameter(
            torch.empty(codebook_size, dim_b).uniform_(-1 / codebook_size, 1 / codebook_size)
        )
        if l2_norm:
            self.codebook_a.data = F.normalize(self.codebook_a.data, dim=-1)
            self.codebook_b.data = F.normalize(self.codebook_b.data, dim=-1)

    def _prepare(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x = z if z.dtype in (torch.float32, torch.float64) else z.float()
        a, b = x.split([self.dim_a, self.dim_b], dim=-1)
        if self.l2_norm:
            a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
        return a, b

    def _codes(self) -> tuple[Tensor, Tensor]:
        if self.l2_norm:
            return F.normalize(self.codebook_a, dim=-1), F.normalize(self.codebook_b, dim=-1)
        return self.codebook_a, self.codebook_b

    def _search(self, a: Tensor, b: Tensor) -> Tensor:
        lead = a.shape[:-1]
        w_a, w_b = self.weights
        with torch.no_grad():
            xa, xb = a.detach().reshape(-1, self.dim_a), b.detach().reshape(-1, self.dim_b)
            ca, cb = (c.detach().to(xa.dtype) for c in self._codes())
            xa_sq, xb_sq = xa.pow(2).sum(1, keepdim=True), xb.pow(2).sum(1, keepdim=True)
            ca_sq, cb_sq = ca.pow(2).sum(1), cb.pow(2).sum(1)

            def score(part: slice, start: int, stop: int) -> Tensor:
                d_a = _tokenflow_distance(xa[part], xa_sq[part], ca[start:stop], ca_sq[start:stop])
                d_b = _tokenflow_distance(xb[part], xb_sq[part], cb[start:stop], cb_sq[start:stop])
                return (d_a if w_a == 1.0 else w_a * d_a) + w_b * d_b

            ids = chunked_argmin(xa.shape[0], self.codebook_size, score, self.chunk_size, device=xa.device)
        return ids.reshape(lead)

    def encode(self, z: Tensor) -> Tensor:
        """Latents (..., dim_a + dim_b) -> int64 ids (...)."""
        check_latents(z, self.dim)
        return self._search(*self._prepare(z))

    def decode_pair(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """Integer ids (...) -> (codes_a (..., dim_a), codes_b (..., dim_b))."""
        check_ids(ids, self.codebook_size)
        ca, cb = self._codes()
        return F.embedding(ids.long(), ca), F.embedding(ids.long(), cb)

    def decode(self, ids: Tensor) -> Tensor:
        """Integer ids (...) -> concatenated code vectors (..., dim_a + dim_b)."""
        return torch.cat(self.decode_pair(ids), dim=-1)

    def forward(self, z: Tensor) -> QuantizerOutput:
        check_latents(z, self.dim)
        a, b = self._prepare(z)
        ids = self._search(a, b)
        ca, cb = self._codes()
        qa, qb = F.embedding(ids, ca), F.embedding(ids, cb)
        q = torch.cat([qa, qb], dim=-1)
        losses: dict[str, Tensor] = {}
        if self.training:
            x = torch.cat([a, b], dim=-1)
            if self.commitment_weight > 0:
                losses["commitment"] = self.commitment_weight * F.mse_loss(x, q.detach())
            if self.codebook_weight > 0:
                losses["codebook"] = self.codebook_weight * F.mse_loss(q, x.detach())
            q = straight_or_rotated(x, q, "ste")
        usage = CodebookUsage.from_ids(ids, self.codebook_size) if ids.numel() else None
        return QuantizerOutput(q, ids, losses, usage, extras={"codes_a": qa, "codes_b": qb})
