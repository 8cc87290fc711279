"""Quantizers against independent references written here: brute-force float64 search, paper formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoo.layers.quantize import (
    BSQ,
    FSQ,
    LFQ,
    DualCodebookVQ,
    GroupedBinary,
    GroupVQ,
    MultiScaleResidualVQ,
    ResidualLFQ,
    ResidualVQ,
    VectorQuantizer,
    bits_to_ids,
    factorized_entropy,
    ids_to_bits,
    nearest_code,
    phi_index,
)
from zoo.layers.quantize.search import chunked_argmin


def brute_force_sq_dist(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(N, K) squared distances in float64, by explicit differences (not the expanded formula)."""
    diff = z.double().reshape(-1, 1, z.shape[-1]) - codebook.double().unsqueeze(0)
    return diff.pow(2).sum(-1)


def assert_same_or_tied(ids: torch.Tensor, scores: torch.Tensor, tol: float = 1e-5) -> None:
    """ids equal the argmin of `scores` (N, K), except where the chosen code is a float32-level tie."""
    ids = ids.reshape(-1)
    ref = scores.argmin(-1)
    differ = ids != ref
    if differ.any():
        rows = differ.nonzero().squeeze(1)
        gap = scores[rows, ids[rows]] - scores[rows, ref[rows]]
        scale = scores[rows].abs().max(-1).values.clamp(min=1.0)
        assert bool((gap <= tol * scale).all()), f"{int(differ.sum())} ids differ beyond float32 ties"
    assert differ.float().mean() < 0.01


# -- nearest_code -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("chunk_size", "block"), [(1, 1 << 22), (7, 1), (7, 50), (64, 64), (1000, 1 << 22)])
def test_nearest_code_euclidean_matches_brute_force(chunk_size: int, block: int) -> None:
    torch.manual_seed(0)
    z, codebook = torch.randn(3, 21, 16), torch.randn(300, 16)
    ids = nearest_code(z, codebook, chunk_size=chunk_size, max_block_elements=block)
    assert ids.shape == (3, 21) and ids.dtype == torch.int64
    assert_same_or_tied(ids, brute_force_sq_dist(z.reshape(-1, 16), codebook))


@pytest.mark.parametrize("chunk_size", [5, 300])
def test_nearest_code_cosine_matches_brute_force(chunk_size: int) -> None:
    torch.manual_seed(1)
    z, codebook = torch.randn(200, 12) * 3, torch.randn(257, 12)
    ids = nearest_code(z, codebook, metric="cosine", chunk_size=chunk_size)
    cos = F.normalize(z.double(), dim=-1) @ F.normalize(codebook.double(), dim=-1).T
    assert_same_or_tied(ids, -cos)


@pytest.mark.parametrize("chunk_size", [1, 3, 16, 4096])
def test_nearest_code_ties_resolve_like_encodec(chunk_size: int) -> None:
    """Small integers make every distance exact, so ties are real; they must go to the lowest index."""
    torch.manual_seed(2)
    z = torch.randint(-2, 3, (200, 4)).float()
    codebook = torch.randint(-2, 3, (40, 4)).float()
    codebook[20:] = codebook[:20]  # exact duplicates: the first copy must win
    encodec = -(z.pow(2).sum(1, keepdim=True) - 2 * z @ codebook.T + codebook.pow(2).sum(1))
    expected = encodec.max(dim=-1).indices
    ids = nearest_code(z, codebook, chunk_size=chunk_size, max_block_elements=64)
    assert torch.equal(ids, expected)
    assert int(ids.max()) < 20


def test_chunked_search_memory_block_is_bounded() -> None:
    shapes: list[tuple[int, int]] = []
    x = torch.randn(300, 4)
    codes = torch.randn(2000, 4)

    def score(part: slice, start: int, stop: int) -> torch.Tensor:
        block = brute_force_sq_dist(x[part], codes[start:stop]).float()
        shapes.append(tuple(block.shape))
        return block

    ids = chunked_argmin(300, 2000, score, chunk_size=256, max_block_elements=256 * 32)
    assert max(rows * cols for rows, cols in shapes) <= 256 * 32
    assert torch.equal(ids, brute_force_sq_dist(x, codes).argmin(-1))


# -- VectorQuantizer search variants ------------------------------------------------------------------


def _vq(codebook_size: int, dim: int, **kwargs: object) -> VectorQuantizer:
    q = VectorQuantizer(codebook_size, dim, **kwargs).eval()
    q.codebook.data.normal_()
    return q


def test_vq_l2_codes_search_and_decode() -> None:
    torch.manual_seed(3)
    q = _vq(128, 8, normalize_codes=True, chunk_size=50)
    z = torch.randn(90, 8)
    ids = q.encode(z)
    codes = F.normalize(q.codebook.detach(), dim=-1)
    assert_same_or_tied(ids, brute_force_sq_dist(F.normalize(z, dim=-1), codes))
    assert torch.allclose(q.decode(ids).norm(dim=-1), torch.ones(90))


def test_vq_s3_v1_normalises_only_the_input() -> None:
    torch.manual_seed(4)
    q = _vq(100, 6, normalize_inputs=True)
    z = torch.randn(70, 6) * 5
    ids = q.encode(z)
    assert_same_or_tied(ids, brute_force_sq_dist(F.normalize(z, dim=-1), q.codebook.detach()))
    assert torch.equal(q.decode(ids), q.codebook.detach()[ids])


def test_vq_cosine_decodes_normalised_codes() -> None:
    torch.manual_seed(5)
    q = _vq(64, 10, metric="cosine")
    z = torch.randn(30, 10)
    ids = q.encode(z)
    cos = F.normalize(z.double(), dim=-1) @ F.normalize(q.codebook.detach().double(), dim=-1).T
    assert_same_or_tied(ids, -cos)
    assert torch.allclose(q.decode(ids), F.normalize(q.codebook.detach(), dim=-1)[ids])


# -- residual and group VQ ----------------------------------------------------------------------------


def test_residual_vq_matches_reference_and_first_n() -> None:
    torch.manual_seed(6)
    rvq = ResidualVQ(4, 32, 6).eval()
    for layer in rvq.layers:
        layer.codebook.data = torch.randint(-4, 5, (32, 6)).float()
    z = torch.randint(-8, 9, (5, 9, 6)).float()  # integers: every residual and distance is exact
    residual = z.reshape(-1, 6).double()
    expected = []
    for layer in rvq.layers:
        ids = brute_force_sq_dist(residual, layer.codebook.detach()).argmin(-1)
        residual = residual - layer.codebook.detach().double()[ids]
        expected.append(ids)
    ids = rvq.encode(z)
    assert torch.equal(ids.reshape(-1, 4), torch.stack(expected, -1))
    for n in (1, 2, 3):
        assert torch.equal(rvq.encode(z, num_quantizers=n), ids[..., :n])
        partial = sum(rvq.layers[i].codebook.detach()[ids[..., i]] for i in range(n))
        assert torch.equal(rvq.decode(ids[..., :n]), partial)


def test_group_vq_quantizes_each_channel_group() -> None:
    torch.manual_seed(7)
    q = GroupVQ(3, 20, 12).eval()
    z = torch.randn(4, 5, 12)
    ids = q.encode(z)
    assert ids.shape == (4, 5, 3)
    for g, (layer, part) in enumerate(zip(q.layers, z.split(4, dim=-1), strict=True)):
        assert_same_or_tied(ids[..., g], brute_force_sq_dist(part.reshape(-1, 4), layer.codebook.detach()))
    assert torch.equal(
        q.decode(ids), torch.cat([q.layers[g].codebook.detach()[ids[..., g]] for g in range(3)], -1)
    )


# -- FSQ -----------------------------------------------------------------------------------------------


def paper_fsq_ids(z: np.ndarray, levels: list[int], eps: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """The FSQ paper's reference (bound, round, scale-and-shift, basis dot), in float64 numpy."""
    lv = np.asarray(levels, dtype=np.float64)
    half_l = (lv - 1) * (1 - eps) / 2
    offset = np.where(lv % 2 == 1, 0.0, 0.5)
    shift = np.tan(offset / half_l)
    bounded = np.tanh(z + shift) * half_l - offset
    digits = np.round(bounded) + lv // 2
    basis = np.concatenate(([1], np.cumprod(lv[:-1])))
    return (digits * basis).sum(-1).astype(np.int64), bounded


@pytest.mark.parametrize("levels", [[8, 8, 8, 5, 5, 5], [8, 5, 5, 5], [7, 5, 5, 5, 5], [4, 4, 3]])
def test_fsq_matches_paper_formula(levels: list[int]) -> None:
    torch.manual_seed(8)
    q = FSQ(levels).eval()
    z = torch.randn(4000, len(levels)) * 2
    ref, bounded = paper_fsq_ids(z.double().numpy(), levels)
    near_half = (np.abs(np.abs(bounded - np.floor(bounded)) - 0.5) < 1e-5).any(-1)
    ids = q.encode(z).numpy()
    assert (ids[~near_half] == ref[~near_half]).all()
    codes = q.decode(torch.arange(q.codebook_size))
    assert torch.unique(codes, dim=0).shape[0] == q.codebook_size
    assert float(codes.abs().max()) <= 1.0


def test_fsq_decode_is_mixed_radix_inverse() -> None:
    levels = [8, 5, 5, 5]
    q = FSQ(levels)
    for digit_order in ("first_least", "first_most"):
        q = FSQ(levels, digit_order=digit_order)
        ids = torch.arange(q.codebook_size)
        digits = q.digits(ids)
        order = range(len(levels)) if digit_order == "first_least" else reversed(range(len(levels)))
        rebuilt = torch.zeros_like(ids)
        weight = 1
        for i in order:
            rebuilt += digits[:, i] * weight
            weight *= levels[i]
        assert torch.equal(rebuilt, ids)
        half = torch.tensor([lv // 2 for lv in levels])
        assert torch.equal(q.decode(ids), (digits - half).float() / half.float())


def test_fsq_reproduces_s3tokenizer_v2_formula() -> None:
    torch.manual_seed(9)
    q = FSQ([3] * 8, bound="scaled_tanh", tanh_scale=0.9990000128746033)
    h = torch.randn(6, 50, 8) * 3
    # S3Tokenizer v2 (FSQCodebook.encode): tanh, times 0.999 (as float32), round, +1, base-3 digits, power i.
    digits = (torch.tanh(h) * 0.9990000128746033).round() + 1
    expected = (digits * torch.pow(3, torch.arange(8, dtype=torch.float32))).sum(-1).int()
    assert torch.equal(q.encode(h), expected.long())
    assert q.codebook_size == 3**8


def test_fsq_atanh_bound_matches_vector_quantize_pytorch() -> None:
    vqpt = pytest.importorskip("vector_quantize_pytorch", reason="vector-quantize-pytorch is not installed")
    torch.manual_seed(10)
    levels = [8, 8, 8, 5, 5, 5]
    ours = FSQ(levels, bound="atanh").eval()
    theirs = vqpt.FSQ(levels=levels).eval()
    z = torch.randn(2, 3000, 6) * 2
    with torch.no_grad():
        codes, ids = theirs(z)
    assert torch.equal(ours.encode(z), ids.long())
    assert torch.allclose(ours.decode(ours.encode(z)), codes, atol=1e-6)


# -- LFQ / BSQ / grouped binary -----------------------------------------------------------------------


def reference_binary_ids(z: torch.Tensor, msb_first: bool) -> list[int]:
    out = []
    for row in z.reshape(-1, z.shape[-1]).tolist():
        bits = [1 if v > 0 else 0 for v in row]
        if msb_first:
            bits = bits[::-1]
        out.append(sum(b << i for i, b in enumerate(bits)))
    return out


def test_lfq_ids_follow_open_magvit2_order() -> None:
    torch.manual_seed(11)
    z = torch.randn(7, 9, 18)
    z[0, 0, :3] = 0.0  # zero is not positive: it maps to -1 and a 0 bit
    q = LFQ(18).eval()
    ids = q.encode(z)
    assert ids.reshape(-1).tolist() == reference_binary_ids(z, msb_first=False)
    assert torch.equal(q.decode(ids), torch.where(z > 0, 1.0, -1.0))
    assert LFQ(18, bit_order="msb_first").encode(z).reshape(-1).tolist() == reference_binary_ids(z, True)


def test_lfq_matches_vector_quantize_pytorch() -> None:
    vqpt = pytest.importorskip("vector_quantize_pytorch", reason="vector-quantize-pytorch is not installed")
    torch.manual_seed(12)
    theirs = vqpt.LFQ(dim=10, codebook_size=2**10).eval()
    ours = LFQ(10, bit_order="msb_first").eval()
    z = torch.randn(2, 500, 10)
    with torch.no_grad():
        out = theirs(z)
    assert torch.equal(ours.encode(z), out.indices.long())
    assert torch.equal(ours.decode(ours.encode(z)), out.quantized)


def test_bsq_codes_lie_on_the_sphere_with_bsq_vit_ids() -> None:
    torch.manual_seed(13)
    q = BSQ(14).eval()
    z = torch.randn(300, 14) * 4
    ids = q.encode(z)
    assert ids.tolist() == reference_binary_ids(z, msb_first=True)
    codes = q.decode(ids)
    assert torch.allclose(codes.norm(dim=-1), torch.ones(300))
    assert torch.equal(codes, torch.where(z > 0, 1.0, -1.0) * (1 / math.sqrt(14)))


@pytest.mark.parametrize(("bits", "group_bits"), [(128, 1), (128, 8), (128, 16), (128, 32), (126, 63)])
@pytest.mark.parametrize("bit_order", ["lsb_first", "msb_first"])
def test_bits_and_group_ids_are_lossless(bits: int, group_bits: int, bit_order: str) -> None:
    torch.manual_seed(14)
    raw = torch.rand(5, 3, bits) > 0.5
    ids = bits_to_ids(raw, group_bits, bit_order)  # type: ignore[arg-type]
    assert ids.shape == (5, 3, bits // group_bits) and ids.dtype == torch.int64
    assert int(ids.min()) >= 0
    assert torch.equal(ids_to_bits(ids, group_bits, bit_order), raw)  # type: ignore[arg-type]
    # The documented order, with Python integers: group j holds channels [j*g, (j+1)*g).
    row = raw[0, 0].tolist()
    for j in range(bits // group_bits):
        chunk = row[j * group_bits : (j + 1) * group_bits]
        if bit_order == "msb_first":
            chunk = chunk[::-1]
        assert int(ids[0, 0, j]) == sum(int(b) << i for i, b in enumerate(chunk))


def test_grouped_binary_128_bits() -> None:
    torch.manual_seed(15)
    q = GroupedBinary(128, 16).eval()
    z = torch.randn(2, 10, 128)
    ids = q.encode(z)
    assert ids.shape == (2, 10, 8)
    assert q.codebook_sizes == (2**16,) * 8 and q.codebook_size == 2**128
    assert torch.equal(q.decode(ids), torch.where(z > 0, 1.0, -1.0))
    assert torch.equal(q.encode_bits(z), z > 0)
    assert torch.equal(ids, bits_to_ids(z > 0, 16))
    assert torch.equal(GroupedBinary(128, 1).encode(z), (z > 0).long())


def test_factorized_entropy_against_full_codebook() -> None:
    torch.manual_seed(16)
    bits, scale, inv_t = 6, 1 / math.sqrt(6), 3.0
    z = torch.randn(400, bits, dtype=torch.float64)
    codes = (ids_to_bits(torch.arange(2**bits).unsqueeze(-1), bits).double() * 2 - 1) * scale
    probs = (2 * inv_t * z @ codes.T).softmax(-1)
    full_sample = -(probs * probs.clamp(min=1e-300).log()).sum(-1).mean()
    avg = probs.mean(0)
    full_codebook = -(avg * avg.log()).sum()
    exact_sample, exact_codebook = factorized_entropy(z, scale, inv_t, group_size=bits)
    assert torch.allclose(exact_sample, full_sample) and torch.allclose(exact_codebook, full_codebook)
    per_bit_sample, per_bit_codebook = factorized_entropy(z, scale, inv_t, group_size=1)
    assert torch.allclose(per_bit_sample, full_sample)  # the per-sample term factorises exactly
    assert per_bit_codebook >= full_codebook - 1e-9  # sum of marginal entropies bounds the joint one


# -- dual codebook, multi-scale, MOSS ------------------------------------------------------------------


def test_dual_codebook_index_is_argmin_of_weighted_sum() -> None:
    torch.manual_seed(17)
    for weights in [(1.0, 1.0), (1.0, 0.25), (1.0, 0.0)]:
        q = DualCodebookVQ(300, 12, 4, weights=weights, chunk_size=64).eval()
        q.codebook_a.data.normal_()
        q.codebook_b.data.normal_()
        z = torch.randn(150, 16)
        za, zb = F.normalize(z[:, :12], dim=-1), F.normalize(z[:, 12:], dim=-1)
        ca, cb = F.normalize(q.codebook_a.detach(), dim=-1), F.normalize(q.codebook_b.detach(), dim=-1)
        scores = weights[0] * brute_force_sq_dist(za, ca) + weights[1] * brute_force_sq_dist(zb, cb)
        ids = q.encode(z)
        assert_same_or_tied(ids, scores)
        codes_a, codes_b = q.decode_pair(ids)
        assert torch.equal(codes_a, ca[ids]) and torch.equal(codes_b, cb[ids])
        out = q(z)
        assert torch.equal(out.extras["codes_a"], codes_a) and torch.equal(out.extras["codes_b"], codes_b)


def test_multiscale_residual_matches_reference_loop() -> None:
    torch.manual_seed(18)
    inner = _vq(64, 8)
    scales = [1, 2, 3, 5]
    q = MultiScaleResidualVQ(inner, scales).eval()
    z = torch.randn(2, 5, 5, 8)
    residual = z.permute(0, 3, 1, 2)
    total = torch.zeros_like(residual)
    flat, grids, ups = [], [], []
    for s in scales:
        small = F.interpolate(residual, size=(s, s), mode="area").permute(0, 2, 3, 1)
        ids = brute_force_sq_dist(small.reshape(-1, 8), inner.codebook.detach()).argmin(-1).reshape(2, s, s)
        up = F.interpolate(inner.codebook.detach()[ids].permute(0, 3, 1, 2), size=(5, 5), mode="bicubic")
        total, residual = total + up, residual - up
        ups.append(up.permute(0, 2, 3, 1))
        flat.append(ids.reshape(2, -1))
        grids.append(ids)
    ids = q.encode(z)
    assert torch.equal(ids, torch.cat(flat, 1))
    for got, want in zip(q.split_ids(ids), grids, strict=True):
        assert torch.equal(got, want)
    assert torch.allclose(q.decode(ids), total.permute(0, 2, 3, 1), atol=1e-5)
    coarse = q.decode(ids[:, : 1 + 4])  # the first two scales only
    assert torch.allclose(coarse, ups[0] + ups[1], atol=1e-5)


def test_phi_index_follows_var_ticks() -> None:
    for num_phi in (1, 2, 4, 6):
        for num_scales in (2, 10, 15):
            if num_phi == 4:
                ticks = np.linspace(1 / 12, 1 - 1 / 12, 4)
            else:
                ticks = np.linspace(1 / 2 / num_phi, 1 - 1 / 2 / num_phi, num_phi)
            for si in range(num_scales):
                assert phi_index(si, num_scales, num_phi) == int(
                    np.argmin(np.abs(ticks - si / (num_scales - 1)))
                )


def test_residual_lfq_is_moss_projected_vq() -> None:
    torch.manual_seed(19)
    q = ResidualLFQ(3, 64, 16, 4, input_dim=12, output_dim=10).eval()
    z = torch.randn(2, 20, 12)
    with torch.no_grad():
        residual = q.input_proj(z).reshape(-1, 16)
        total = torch.zeros_like(residual)
        expected = []
        for layer in q.layers:
            z_e = layer.in_proj(residual)
            book = layer.codebook.detach()
            ids = brute_force_sq_dist(F.normalize(z_e, dim=-1), F.normalize(book, dim=-1)).argmin(-1)
            code = layer.out_proj(book[ids])  # the RAW code, projected back
            total, residual = total + code, residual - code
            expected.append(ids)
        ids = q.encode(z)
        assert_same_or_tied(
            ids[..., 0],
            brute_force_sq_dist(
                F.normalize(q.layers[0].in_proj(q.input_proj(z)).reshape(-1, 4), dim=-1),
                F.normalize(q.layers[0].codebook.detach(), dim=-1),
            ),
        )
        assert torch.equal(ids.reshape(-1, 3), torch.stack(expected, -1))
        assert torch.allclose(q.decode(ids).reshape(-1, 10), q.output_proj(total), atol=1e-5)
