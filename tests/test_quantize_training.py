"""Training machinery (EMA, k-means init, dead codes, losses, gradients) and usage statistics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from zoo.layers.quantize import (
    BSQ,
    FSQ,
    LFQ,
    CodebookUsage,
    DualCodebookVQ,
    MultiScaleResidualVQ,
    ResidualLFQ,
    ResidualVQ,
    VectorQuantizer,
    kmeans,
    rotation_trick,
)


def clustered(centers: torch.Tensor, per_center: int, noise: float = 0.01) -> torch.Tensor:
    torch.manual_seed(1)
    points = centers.repeat_interleave(per_center, 0)
    return points + noise * torch.randn_like(points)


def match_error(found: torch.Tensor, centers: torch.Tensor) -> float:
    """Largest distance from a true centre to the nearest found centre."""
    return float(torch.cdist(centers, found).min(dim=1).values.max())


def test_kmeans_recovers_separated_clusters() -> None:
    centers = torch.eye(6) * 5
    # Twice as many means as clusters: random seeding (as upstream) then cannot leave a cluster empty-handed.
    means, counts = kmeans(clustered(centers, 40), 12, iters=20, generator=torch.Generator().manual_seed(0))
    assert match_error(means, centers) < 0.1
    assert int(counts.sum()) == 240


def test_kmeans_init_runs_on_first_training_batch_only() -> None:
    centers = torch.eye(8) * 4
    data = clustered(centers, 30)
    q = VectorQuantizer(16, 8, kmeans_init=True, kmeans_iters=20, ema_decay=0.9)
    assert not bool(q.initialized)
    q.eval()
    q(data)
    assert torch.equal(q.codebook, torch.zeros(16, 8)), "inference must never run k-means"
    q.train()
    q(data)
    assert bool(q.initialized)
    assert match_error(q.codebook, centers) < 0.2


def test_loaded_codebook_counts_as_initialised() -> None:
    source = VectorQuantizer(16, 4)
    target = VectorQuantizer(16, 4, kmeans_init=True)
    target.load_state_dict(source.state_dict())
    assert bool(target.initialized)
    target.train()
    target(torch.randn(50, 4) * 10)
    assert torch.equal(target.codebook, source.codebook), "a loaded codebook must not be re-clustered"


def test_ema_moves_codes_towards_their_data_and_has_no_codebook_loss() -> None:
    torch.manual_seed(2)
    q = VectorQuantizer(4, 2, ema_decay=0.5).train()
    q.codebook.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]))
    data = torch.tensor([[3.0, 0.0]]).repeat(64, 1)
    for _ in range(20):
        out = q(data)
    assert torch.allclose(q.codebook[0], torch.tensor([3.0, 0.0]), atol=1e-2)
    assert "codebook" not in out.losses and "commitment" in out.losses
    assert not q.codebook.requires_grad


def test_dead_codes_are_restarted_from_the_batch() -> None:
    torch.manual_seed(3)
    q = VectorQuantizer(8, 2, ema_decay=0.9, threshold_dead=0.5).train()
    q.codebook.copy_(torch.randn(8, 2) + 100)  # all far away: only one code will be used
    q.embed_avg.copy_(q.codebook)
    data = torch.randn(256, 2)
    unused = torch.bincount(q(data).ids, minlength=8) == 0
    assert int(unused.sum()) >= 6
    assert bool((q.cluster_size >= 0.5).all())
    # Every code the batch left unused was restarted onto a batch vector.
    exact_hit = (q.codebook.unsqueeze(1) == data.unsqueeze(0)).all(-1).any(-1)
    assert bool(exact_hit[unused].all())


def test_usage_is_tracked_without_ema_for_restarts() -> None:
    q = VectorQuantizer(8, 2, threshold_dead=0.1, usage_decay=0.5).train()
    assert q.cluster_size is not None and "cluster_size" not in q.state_dict()
    q(torch.randn(64, 2))
    assert float(q.cluster_size.sum()) > 0


def test_losses_and_straight_through_gradient() -> None:
    torch.manual_seed(4)
    q = VectorQuantizer(32, 6, commitment_weight=0.3).train()
    z = torch.randn(5, 7, 6, requires_grad=True)
    out = q(z)
    codes = q.codebook.detach()[out.ids]
    assert torch.allclose(out.losses["commitment"], 0.3 * F.mse_loss(z.detach(), codes))
    assert torch.allclose(out.losses["codebook"], F.mse_loss(codes, z.detach()))
    assert torch.allclose(out.quantized, codes, atol=1e-6)
    grad = torch.randn_like(z)
    (out.quantized * grad).sum().backward()
    assert torch.allclose(z.grad, grad)
    out.losses["codebook"].backward()
    assert q.codebook.grad is not None and q.codebook.grad.abs().sum() > 0


def test_rotation_trick_value_and_gradient() -> None:
    torch.manual_seed(5)
    z = torch.randn(50, 8, requires_grad=True)
    q = torch.randn(50, 8)
    out = rotation_trick(z, q)
    assert torch.allclose(out, q, atol=1e-5)
    grad = torch.randn(50, 8)
    (out * grad).sum().backward()
    # The gradient is rotated (norm kept) and scaled by |q| / |z|.
    scale = q.norm(dim=-1) / z.detach().norm(dim=-1)
    assert torch.allclose(z.grad.norm(dim=-1), grad.norm(dim=-1) * scale, rtol=1e-4)
    assert not torch.allclose(z.grad, grad * scale.unsqueeze(-1), atol=1e-3)

    z2 = torch.randn(1, 8, requires_grad=True)
    parallel = z2.detach() * 3
    (rotation_trick(z2, parallel) * grad[:1]).sum().backward()
    assert torch.allclose(z2.grad, grad[:1] * 3, atol=1e-5)


def test_vq_with_rotation_gradient_trains() -> None:
    q = VectorQuantizer(16, 4, gradient="rotation").train()
    z = torch.randn(20, 4, requires_grad=True)
    out = q(z)
    (out.quantized.sum() + sum(out.losses.values())).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


def test_residual_quantizer_dropout_and_losses() -> None:
    torch.manual_seed(6)
    rvq = ResidualVQ(6, 16, 4, quantizer_dropout=1.0).train()
    depths = {rvq(torch.randn(10, 4)).ids.shape[-1] for _ in range(30)}
    assert len(depths) > 1 and max(depths) <= 6
    rvq.eval()
    out = rvq(torch.randn(10, 4))
    assert out.ids.shape[-1] == 6 and out.losses == {}
    rvq.train()
    rvq.quantizer_dropout = 0.0
    assert set(rvq(torch.randn(10, 4)).losses) == {"codebook", "commitment"}


@pytest.mark.parametrize("quantizer", [LFQ(10), BSQ(12, entropy_group_size=4)])
def test_binary_entropy_loss_has_gradients(quantizer: LFQ) -> None:
    quantizer.train()
    z = torch.randn(64, quantizer.dim, requires_grad=True)
    out = quantizer(z)
    assert set(out.losses) == {"entropy", "commitment"}
    sum(out.losses.values()).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_fsq_straight_through() -> None:
    q = FSQ([5, 5, 5]).train()
    z = torch.randn(30, 3, requires_grad=True)
    out = q(z)
    assert torch.allclose(out.quantized, q.decode(out.ids), atol=1e-6)
    out.quantized.sum().backward()
    assert z.grad is not None and (z.grad > 0).all()


def test_other_quantizers_train() -> None:
    torch.manual_seed(7)
    cases = [
        (ResidualLFQ(2, 16, 8, 4), torch.randn(3, 5, 8)),
        (DualCodebookVQ(16, 6, 2), torch.randn(3, 5, 8)),
        (MultiScaleResidualVQ(VectorQuantizer(16, 4), [1, 2, 4], num_phi=2), torch.randn(2, 4, 4, 4)),
    ]
    for quantizer, z in cases:
        quantizer.train()
        z.requires_grad_(True)
        out = quantizer(z)
        assert {"codebook", "commitment"} <= set(out.losses)
        (out.quantized.sum() + sum(out.losses.values())).backward()
        assert z.grad is not None and torch.isfinite(z.grad).all(), type(quantizer).__name__


def test_codebook_usage_statistics() -> None:
    uniform = CodebookUsage.from_ids(torch.arange(8).repeat(5), 8)
    assert torch.equal(uniform.counts, torch.full((8,), 5))
    assert math.isclose(float(uniform.perplexity), 8.0, rel_tol=1e-5)
    assert float(uniform.dead_fraction) == 0.0
    single = CodebookUsage.from_ids(torch.full((10,), 3), 8)
    assert math.isclose(float(single.perplexity), 1.0, rel_tol=1e-6)
    assert math.isclose(float(single.dead_fraction), 7 / 8)
    per_book = CodebookUsage.from_ids(torch.tensor([[0, 1], [0, 2], [0, 3], [0, 0]]), 4, codebook_axis=True)
    assert per_book.counts.tolist() == [[4, 0, 0, 0], [1, 1, 1, 1]]
    assert torch.allclose(per_book.perplexity, torch.tensor([1.0, 4.0]))
    assert torch.allclose(per_book.dead_fraction, torch.tensor([0.75, 0.0]))


def test_forward_reports_usage() -> None:
    q = VectorQuantizer(16, 4).eval()
    out = q(torch.randn(100, 4))
    assert out.usage is not None and int(out.usage.counts.sum()) == 100
    assert torch.equal(out.usage.counts, torch.bincount(out.ids, minlength=16))
    assert LFQ(30).eval()(torch.randn(4, 30)).usage is None  # 2^30 codes: too many to histogram
