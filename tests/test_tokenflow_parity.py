"""TokenFlow parity with the official implementation (../shared/parity/tokenflow/a, full size).

The case mirrors tokenflow_clipb_32k_enhanced.pt (CLIP ViT-B/16 teacher, 256 px, 817 ids). The model is
converted once per module (about 1.6 GB of float32 weights); one encode and one decode run through
the public Tokens API, with hooks catching the intermediate tensors the case stores.
"""

from __future__ import annotations

import gc
from typing import Any

import pytest
import torch

from registry import convert
from tests.parity import Case, assert_ids_match, load_case, max_abs

pytestmark = pytest.mark.heavy

# max abs tolerances from the case README (max(1e-4, 10 x the float64 difference))
TOLERANCE = {
    "reconstruction": 2.4e-4,
    "semantic_reconstruction": 1e-4,
    "latent": 1e-4,
    "teacher_tokens": 1e-4,
    "code_sum": 1e-4,
}


@pytest.fixture(scope="module")
def case() -> Case:
    return load_case("tokenflow")


@pytest.fixture(scope="module")
def run(case: Case) -> Any:
    state = case.state_dict()
    tok = convert("tokenflow", state, case.upstream_config)
    del state
    gc.collect()
    caught: dict[str, torch.Tensor] = {}

    def keep(name: str):
        return lambda module, args, output: caught.__setitem__(name, output.detach())

    hooks = [
        tok.teacher.norm.register_forward_hook(keep("teacher_all")),
        tok.to_semantic_code.register_forward_hook(keep("semantic")),
        tok.to_pixel_code.register_forward_hook(keep("pixel")),
    ]
    x = case.io["input"]
    with torch.no_grad():
        tokens = tok.encode(x)
        for hook in hooks:
            hook.remove()
        upstream_tokens = tok.tokens_from_upstream(case.io["ids"])
        out = {
            "tokens": tokens,
            "teacher_tokens": caught["teacher_all"][:, 1:],
            "latent": torch.cat([caught["semantic"].transpose(1, 2).reshape(1, -1, 16, 16), caught["pixel"]], 1),
            "code_sum": tok.quantized(upstream_tokens.ids).permute(0, 3, 1, 2),
            "semantic_reconstruction": tok.semantic_features(upstream_tokens),
            "reconstruction": tok.decode(upstream_tokens),
        }
    yield tok, out
    del tok, out
    gc.collect()


def test_converted_model_matches_the_published_layout(run: Any) -> None:
    tok, _ = run
    assert tok.spec.tokens_per_item == 817 and tok.scales == [1, 2, 4, 6, 8, 10, 12, 14, 16]
    assert "quantize.codebook_used" not in tok.state_dict()


def test_ids_match_upstream(run: Any, case: Case) -> None:
    _, out = run
    tokens = out["tokens"]
    assert tokens.ids.shape == (1, 817)
    assert_ids_match(tokens.ids, case.io["ids"], case.io["tie_mask"])


@pytest.mark.parametrize("name", ["teacher_tokens", "latent", "code_sum", "semantic_reconstruction", "reconstruction"])
def test_floats_match_upstream(run: Any, case: Case, name: str) -> None:
    _, out = run
    error = max_abs(out[name], case.io[name])
    assert error <= TOLERANCE[name], f"{name}: max abs error {error:.3g} > {TOLERANCE[name]:.3g}"
