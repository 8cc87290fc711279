"""Parity with the official WavTokenizer (../shared/parity/wavtokenizer/a, large-speech-75 layout).

The fixture's upstream state dict (1091 keys with discriminators, losses and the unused EnCodec decoder)
goes through our converter; ids must equal upstream's outside `tie_mask`, and decoding upstream's ids
must reproduce upstream's reconstruction within the case's tolerance. One conversion serves the module.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator

import pytest
import torch

import registry
from tests.parity import Case, assert_ids_match, load_case, max_abs
from zoo.wavtokenizer import WavTokenizer

pytestmark = pytest.mark.heavy


@pytest.fixture(scope="module")
def case() -> Case:
    return load_case("wavtokenizer")


@pytest.fixture(scope="module")
def tok(case: Case) -> Iterator[WavTokenizer]:
    model = registry.convert("wavtokenizer", case.state_dict(), case.upstream_config)
    gc.collect()
    yield model
    del model
    gc.collect()


def test_converted_model_matches_the_published_layout(case: Case, tok: WavTokenizer) -> None:
    cfg = tok.config
    assert cfg.encoder.ratios == [8, 5, 4, 2] and cfg.hop_length == 320 and cfg.n_fft == 1280
    assert cfg.codebook_size == 4096 and cfg.backbone.dim == 768 and cfg.backbone.num_layers == 12
    names = [e["name"] for e in case.manifest["tensors"]]
    assert sum(n.startswith(("feature_extractor.", "backbone.", "head.")) for n in names) == 289  # upstream keeps


def test_ids_match_upstream(case: Case, tok: WavTokenizer) -> None:
    tokens = tok.encode(case.io["input"].unsqueeze(1))
    assert_ids_match(tok.tokens_to_upstream(tokens), case.io["ids"], case.io["tie_mask"])


def test_latent_and_backbone_match_upstream(case: Case, tok: WavTokenizer) -> None:
    with torch.no_grad():
        latent = tok.latent(case.io["input"].unsqueeze(1)).transpose(1, 2)
        features = tok.quantizer.lookup(case.io["ids"][0]).transpose(1, 2)
        backbone = tok.backbone(features, int(case.io["bandwidth_id"][0]))
    assert max_abs(latent, case.io["latent"]) < 1e-4  # latent peak 1.4
    assert max_abs(backbone, case.io["backbone_out"]) < 1e-4


def test_reconstruction_matches_upstream(case: Case, tok: WavTokenizer) -> None:
    audio = tok.decode(tok.tokens_from_upstream(case.io["ids"]))
    reference = case.io["reconstruction"]
    assert audio.shape == (1, 1, reference.shape[-1])  # bare upstream ids: n_codes x hop samples
    assert max_abs(audio[:, 0], reference) <= float(case.manifest["tolerance"])


def test_length_contract_and_ragged_batch(case: Case, tok: WavTokenizer) -> None:
    wave = case.io["input"].unsqueeze(1)
    lengths = [24000, 23999 - 320 * 7, 5000]
    batch = torch.zeros(3, 1, 24000)
    for b, n in enumerate(lengths):
        batch[b, :, :n] = wave[0, :, :n]
    tokens = tok.encode(batch, lengths=lengths)
    assert tokens.lengths.tolist() == [math.ceil(n / 320) for n in lengths]
    audio = tok.decode(tokens)
    assert audio.shape == (3, 1, 24000)
    for b, n in enumerate(lengths[1:], start=1):
        alone = tok.encode(wave[:, :, :n])
        assert torch.equal(tokens.ids[b, : alone.ids.shape[1]], alone.ids[0])
        solo = tok.decode(alone)
        assert solo.shape == (1, 1, n)  # trimmed from ceil(n / 320) * 320 back to the input length
        assert max_abs(audio[b, :, :n], solo[0]) < 1e-5
        assert bool((audio[b, :, n:] == 0).all())
