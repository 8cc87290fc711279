"""XY-Tokenizer against upstream (../shared/parity/xytokenizer/a, the published architecture, 3 s clip).

Tolerances are the case README's: ids exact outside `tie_mask`; 1e-3 abs on mel / latent / decoder mel;
1e-4 on latent_rvq / zq and the reconstruction. The fast path (valid frames plus the one-frame margin)
and the faithful 30 s path (`encode_ids_padded`) must both meet them.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator

import pytest
import torch

import registry
from tests.parity import assert_ids_match, load_case, max_abs
from zoo.xytokenizer import XYTokenizer

pytestmark = pytest.mark.heavy


@pytest.fixture(scope="module")
def case_and_model() -> Iterator[tuple[object, XYTokenizer]]:
    case = load_case("xytokenizer", "a")
    tok = registry.convert("xytokenizer", case.state_dict(), case.upstream_config)  # consumes the dict
    yield case, tok
    del tok
    gc.collect()


def test_fast_path_intermediates_and_ids(case_and_model: tuple) -> None:
    case, tok = case_and_model
    io = case.io
    wave = io["input"]
    frames = math.ceil(wave.shape[-1] / 160)
    with torch.no_grad():
        mel = tok.log_mel(wave[None])
        assert mel.shape[-1] == frames + 1
        assert max_abs(mel, io["mel"][..., : frames + 1]) < 1e-3
        latent = tok.latent(wave[None, None])
        steps = io["latent"].shape[-1]
        assert max_abs(latent[:, :steps].transpose(1, 2), io["latent"]) < 1e-3
        assert max_abs(tok.quantizer_in(latent[:, :steps]).transpose(1, 2), io["latent_rvq"]) < 1e-4
    tokens = tok.encode(wave)
    assert tokens.ids.shape == (1, steps, 8)
    assert_ids_match(tok.tokens_to_upstream(tokens)[:, 0], io["ids"], io["tie_mask"])


def test_decode_intermediates_and_reconstruction(case_and_model: tuple) -> None:
    case, tok = case_and_model
    io = case.io
    tokens = tok.tokens_from_upstream(io["ids"])
    with torch.no_grad():
        assert max_abs(tok.codes_to_latent(tokens.ids).transpose(1, 2), io["zq"]) < 1e-4
        assert max_abs(tok.decode_mel(tokens.ids), io["decoder_mel"]) < 1e-3
    audio = tok.decode(tokens)
    assert audio.shape == (1, 1, io["reconstruction"].shape[-1])
    assert max_abs(audio[0, 0], io["reconstruction"]) < 1e-4


def test_padded_reference_path_is_upstream(case_and_model: tuple) -> None:
    """The 30 s computation the benchmark compares against reproduces upstream's mel and ids."""
    case, tok = case_and_model
    io = case.io
    with torch.no_grad():
        assert max_abs(tok.log_mel(io["input"][None], padded=True), io["mel"]) < 1e-3
        ids = tok.encode_ids_padded(io["input"][None, None])
    assert_ids_match(ids[0].T, io["ids"], io["tie_mask"])
