"""UniWeTok against upstream (`autoencoder_uni.VQModel`), parity case ../shared/parity/uniwetok/a.

One conversion and one encode/decode of the full-size model (405.9M parameters) serve every test.
"""

from __future__ import annotations

import gc
from dataclasses import asdict

import pytest
import torch

from registry import convert
from registry.config import load_variant_config, model_config
from tests.parity import assert_ids_match, load_case, max_abs

RECONSTRUCTION_TOL = 1e-4  # the case README's recommended max abs error
RELATIVE_TOL = 1e-4  # intermediates: relative to their max, as the README recommends


@pytest.fixture(scope="module")
def run() -> dict:
    case = load_case("uniwetok")
    state = case.state_dict()
    tok = convert("uniwetok", state, case.upstream_config)
    del state
    gc.collect()
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str, which: str):
        def hook(module, args, output):
            seen[name] = (args[0] if which == "in" else output).detach().clone()

        return hook

    handles = [
        tok.encoder.mixer.register_forward_hook(keep("enc_pre_attn", "in")),
        tok.encoder.mixer.register_forward_hook(keep("enc_post_attn", "out")),
        tok.encoder.conv_out.register_forward_hook(keep("latent_logits", "out")),
        tok.decoder.mixer.register_forward_hook(keep("dec_pre_attn", "in")),
        tok.decoder.mixer.register_forward_hook(keep("dec_post_attn", "out")),
    ]
    io = case.io
    with torch.no_grad():
        tokens = tok.encode(io["input"])
        upstream_tokens = tok.tokens_from_upstream(io["ids"])
        reconstruction = tok.decode(upstream_tokens, noise=tok.noise_from_upstream(io["decoder_noise"]))
    for handle in handles:
        handle.remove()
    out = {
        "io": io,
        "bits": tok.tokens_to_upstream(tokens),
        "ids_ours": tokens.ids,
        "ids_from_upstream": upstream_tokens.ids,
        "reconstruction": reconstruction,
        "seen": seen,
    }
    del tok
    gc.collect()
    return out


@pytest.mark.heavy
def test_bits_match_upstream(run: dict) -> None:
    io = run["io"]
    assert run["bits"].shape == (1, 128, 8, 8)
    assert_ids_match(run["bits"], io["ids"], io["tie_mask"])
    assert torch.equal(run["ids_ours"], run["ids_from_upstream"]) or bool(io["tie_mask"].any())


@pytest.mark.heavy
def test_latent_matches_upstream(run: dict) -> None:
    io = run["io"]
    logits = run["seen"]["latent_logits"]
    latent = 2 * torch.sigmoid(logits) - 1
    assert max_abs(logits, io["latent_logits"]) <= RELATIVE_TOL * float(io["latent_logits"].abs().max())
    assert max_abs(latent, io["latent"]) <= RELATIVE_TOL * float(io["latent"].abs().max())


@pytest.mark.heavy
@pytest.mark.parametrize("name", ["enc_pre_attn", "enc_post_attn", "dec_pre_attn", "dec_post_attn"])
def test_intermediates_match_upstream(run: dict, name: str) -> None:
    ref = run["io"][name]
    assert max_abs(run["seen"][name], ref) <= RELATIVE_TOL * float(ref.abs().max()), name


@pytest.mark.heavy
def test_reconstruction_matches_upstream(run: dict) -> None:
    err = max_abs(run["reconstruction"], run["io"]["reconstruction"])
    assert err <= RECONSTRUCTION_TOL, f"max abs reconstruction error {err:.3g} > {RECONSTRUCTION_TOL}"


def test_registered_variant_is_the_parity_configuration() -> None:
    """`uniwetok-d32c128` has exactly the sizes the converter derives from the case's upstream ddconfig."""
    import zoo.uniwetok as uw

    case = load_case("uniwetok")
    from_upstream = model_config(uw.UniWeTokConfig, uw._config_from_upstream(case.upstream_config))
    variant = model_config(uw.UniWeTokConfig, load_variant_config("uniwetok-d32c128").model)
    assert asdict(variant) == asdict(from_upstream)
