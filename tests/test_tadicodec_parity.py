"""TaDiCodec against the upstream fixture ../shared/parity/tadicodec/a (full size, deterministic fill weights).

Checked: mel, encoder output, latent, ids (outside tie_mask), BSQ code vectors, the decoder's condition, the
two decoder outputs at step 0, the decoded mel of the full 32-step guided sampling from the recorded noise and
text ids (without and with a 50-frame prompt), and the vocoder waveform; tolerances from the case README.
One conversion per module (about 3 GB float32); materialising the fill weights takes about two minutes.
"""

from __future__ import annotations

import gc

import pytest
import torch

import registry
from tests.parity import assert_ids_match, load_case, max_abs

pytestmark = pytest.mark.heavy


@pytest.fixture(scope="module")
def case():
    return load_case("tadicodec")


@pytest.fixture(scope="module")
def tol(case) -> float:
    return float(case.manifest.get("tolerance", 1e-4))


@pytest.fixture(scope="module")
def tok(case):
    state = case.state_dict()
    model = registry.convert("tadicodec", state, case.upstream_config)
    del state
    gc.collect()
    yield model
    del model
    gc.collect()


def test_mel_front_end(tok, case, tol) -> None:
    io = case.io
    with torch.no_grad():
        mel = tok.mel(io["input"][None])
    assert max_abs(tok.frontend.filters, io["mel_basis"]) <= 1e-6
    assert max_abs(mel, io["mel"]) <= tol


def test_encoder_latent_and_ids(tok, case, tol) -> None:
    io = case.io
    with torch.no_grad():
        features = tok.encoder_features(io["mel"])
        latent = tok.project(tok.downsample(features))
        ids = tok.encode_ids(io["input"][None])
    assert max_abs(features, io["encoder_out"]) <= tol
    assert max_abs(latent, io["latent"]) <= tol
    assert_ids_match(ids, io["ids"], io["tie_mask"])
    tokens = tok.encode(io["input"])
    assert_ids_match(tokens.ids, io["ids"], io["tie_mask"])
    assert torch.equal(tok.tokens_to_upstream(tokens), tokens.ids)
    assert max_abs(tok.embed(io["ids"]), io["vq_emb"]) == 0.0


def test_condition_and_first_step_velocities(tok, case, tol) -> None:
    io = case.io
    t = torch.full((1,), 0.5 / int(io["n_timesteps"]))
    with torch.no_grad():
        cond = tok.condition(io["ids"])
        c = tok.velocity(io["noise"], t, cond, io["text_ids"])
        u = tok.velocity_uncond(io["noise"], t)
    assert max_abs(cond, io["cond_emb"]) <= tol
    assert max_abs(c, io["decoder_out_step0_cond"]) <= tol
    assert max_abs(u, io["decoder_out_step0_uncond"]) <= tol


def test_decoded_mel_without_prompt(tok, case, tol) -> None:
    io = case.io
    mel, frames = tok.decode_mel(
        tok.tokens_from_upstream(io["ids"]), text_ids=io["text_ids"], noise=tok.noise_from_upstream(io["noise"]),
        steps=int(io["n_timesteps"]), cfg_scale=float(io["cfg_scale"]), rescale=float(io["rescale_cfg"]),
    )
    assert frames == [96] and max_abs(mel, io["decoded_mel"]) <= tol


def test_decoded_mel_with_prompt(tok, case, tol) -> None:
    io = case.io
    assert int(io["prompt_frames"]) == io["prompt_mel"].shape[1]
    mel, frames = tok.decode_mel(
        io["ids"], text_ids=io["text_ids"], prompt_mel=io["prompt_mel"], noise=io["noise_prompted"],
        steps=int(io["n_timesteps"]), cfg_scale=float(io["cfg_scale"]), rescale=float(io["rescale_cfg"]),
    )
    assert frames == [46] and max_abs(mel, io["decoded_mel_prompted"]) <= tol


def test_vocoder(tok, case, tol) -> None:
    io = case.io
    with torch.no_grad():
        audio = tok.vocode(io["decoded_mel"])
    assert max_abs(audio, io["reconstruction"]) <= tol
