"""OmniTokenizer against upstream (../shared/parity/omnitokenizer/a): image and video, both attention paths.

The fixture runs upstream in [-0.5, 0.5]; our canonical range is [-1, 1], so inputs are doubled and our
reconstructions halved before comparing (both exact in floating point).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

import zoo.omnitokenizer as om
from registry import convert
from tests.parity import Case, assert_ids_match, load_case, max_abs

pytestmark = pytest.mark.heavy

LATENT_TOL = 1.96e-05  # the case README's rule: max(1e-5, 10 x float32-vs-float64)
RECON_TOL = 1e-4


@pytest.fixture(scope="module")
def case() -> Case:
    return load_case("omnitokenizer")


@pytest.fixture(scope="module")
def tok(case: Case) -> Iterator[om.OmniTokenizer]:
    model = convert("omnitokenizer", case.state_dict(), case.upstream_config)
    gc.collect()
    yield model
    del model
    gc.collect()


def upstream_latent(latent: torch.Tensor, image: bool) -> torch.Tensor:
    """Our pre-quantizer latent (B, [t,] h, w, d) as the fixture stores it: l2-normalised, (B, d, t, h, w)."""
    latent = F.normalize(latent, dim=-1)
    return (latent.unsqueeze(1) if image else latent).permute(0, 4, 1, 2, 3)


def test_converted_config(tok: om.OmniTokenizer) -> None:
    c = tok.config
    assert (c.patch_size, c.temporal_patch_size, c.dim, c.enc_block, c.dec_block) == (8, 4, 512, "ttww", "tttt")
    assert (c.window_size, c.spatial_pos, c.attention_path, c.n_codes, c.codebook_dim) == (8, "rope", "sdpa", 8192, 8)
    assert not any("discriminator" in k or "perceptual" in k for k in tok.state_dict())


@pytest.mark.parametrize("kind", ["image", "video"])
def test_latent_ids_and_reconstruction_match_upstream(case: Case, tok: om.OmniTokenizer, kind: str) -> None:
    io = case.io
    x = io[f"{kind}_input"] * 2
    with torch.no_grad():
        latent = tok.encode_latent(x)
        assert max_abs(upstream_latent(latent, kind == "image"), io[f"{kind}_latent"]) <= LATENT_TOL
        ids = tok.quantizer.encode(latent)
        assert_ids_match(ids.unsqueeze(1) if kind == "image" else ids, io[f"{kind}_ids"], io[f"{kind}_tie_mask"])
        upstream_tokens = tok.tokens_from_upstream(io[f"{kind}_ids"], modality=kind)
        reconstruction = tok.decode(upstream_tokens) / 2
    assert max_abs(reconstruction, io[f"{kind}_reconstruction"]) <= RECON_TOL


def test_encode_decode_api_on_the_fixture_video(case: Case, tok: om.OmniTokenizer) -> None:
    x = case.io["video_input"] * 2
    tokens = tok.encode(x)
    assert tokens.modality == "video" and tokens.original_size.tolist() == [[9, 128, 128]]
    assert torch.equal(tok.tokens_to_upstream(tokens), tokens.ids)
    assert_ids_match(tokens.ids, case.io["video_ids"], case.io["video_tie_mask"])
    assert max_abs(tok.decode(tokens) / 2, case.io["video_reconstruction"]) <= RECON_TOL


def test_legacy_attention_path_matches_upstreams_non_sdpa_branch(case: Case, tok: om.OmniTokenizer) -> None:
    """Upstream's non-SDPA branch (ALiBi in the causal temporal layers); the fixture's `*_nosdpa` tensors."""
    io = case.io
    tok.config.attention_path = "legacy"  # one config object is shared by every layer
    try:
        with torch.no_grad():
            latent = tok.encode_latent(io["video_input"] * 2)
            reconstruction = tok.decode_ids(io["video_ids"]) / 2
    finally:
        tok.config.attention_path = "sdpa"
    assert max_abs(upstream_latent(latent, False), io["video_latent_nosdpa"]) <= LATENT_TOL
    ids = tok.quantizer.encode(latent)
    assert_ids_match(ids, io["video_ids_nosdpa"], None)  # the fixture has no tie mask for this branch
    assert max_abs(reconstruction, io["video_reconstruction_nosdpa"]) <= RECON_TOL
