"""WavTokenizer on its tiny variant: contract, length rules, ragged batches, bad input, converter, persistence."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import zoo
from registry.config import load_variant_config, model_config
from registry.errors import CheckpointError, ConfigError, InputError, UnsupportedError
from zoo.wavtokenizer import WavTokenizer, WavTokenizerConfig, config_from_upstream, convert_wavtokenizer

HOP = 8  # the tiny variant's hop_length


@pytest.fixture(scope="module")
def tok() -> WavTokenizer:
    torch.manual_seed(0)
    return zoo.create_tokenizer("wavtokenizer-tiny").eval()


def clip(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(*shape, generator=g)


def test_registered_variants_and_spec() -> None:
    names = zoo.list_tokenizers("wavtokenizer*")
    assert {"wavtokenizer-large-speech-75", "wavtokenizer-large-unify-40", "wavtokenizer-small-40",
            "wavtokenizer-small-75", "wavtokenizer-medium-speech-75", "wavtokenizer-tiny"} <= set(names)
    info = zoo.info("wavtokenizer-large-unify-40")
    spec = info["spec"]
    assert spec.token_rate == 40 and spec.codebook_sizes == (4096,) and spec.sample_rate == 24000
    assert spec.channels == 1 and spec.downsample == (600,) and spec.bitrate == pytest.approx(480.0)
    assert info["upstream"]["repo"] == "novateur/WavTokenizer-large-unify-40token"


def test_pinned_upstream_files() -> None:
    from registry import variant_info

    pinned = {
        "wavtokenizer-large-speech-75": "wavtokenizer_large_speech_320_v2.ckpt",
        "wavtokenizer-small-75": "WavTokenizer_small_320_24k_4096.ckpt",
        "wavtokenizer-small-40": "WavTokenizer_small_600_24k_4096.ckpt",
    }
    for name, filename in pinned.items():
        up = variant_info(name).upstream
        assert up["filename"] == filename
        assert len(up["sha256"]) == 64 and up["container"] == ["state_dict"]
        ours = model_config(WavTokenizerConfig, load_variant_config(name).model, where=name)
        assert config_from_upstream(up["config"]) == ours, name  # the converter builds the registered config


def test_encode_decode_shapes_and_length_contract(tok: WavTokenizer) -> None:
    x = clip(2, 1, 101)
    tokens = tok.encode(x)
    assert tokens.ids.shape == (2, math.ceil(101 / HOP)) and tokens.ids.dtype == torch.int64
    assert tokens.grid == (13,) and tokens.lengths.tolist() == [13, 13]
    assert tokens.original_size.tolist() == [101, 101]
    audio = tok.decode(tokens)
    assert audio.shape == (2, 1, 101)  # trimmed to the recorded input length
    bare = tok.decode(tokens.ids)
    assert bare.shape == (2, 1, 13 * HOP)  # bare ids: n_codes x hop, as upstream
    assert torch.allclose(bare[..., :101], audio, atol=1e-6)
    assert torch.equal(tok.encode(x[0, 0]).ids, tokens.ids[:1])  # (N,) input is one clip


def test_ragged_batch_gives_solo_tokens(tok: WavTokenizer) -> None:
    lengths = [400, 257, 64, 9]
    x = clip(4, 1, 400, seed=1)
    batched = tok.encode(x, lengths=lengths)
    assert batched.lengths.tolist() == [math.ceil(n / HOP) for n in lengths]
    assert batched.original_size.tolist() == lengths
    audio = tok.decode(batched)
    for b, n in enumerate(lengths):
        alone = tok.encode(x[b : b + 1, :, :n])
        count = alone.ids.shape[1]
        assert torch.equal(batched.ids[b, :count], alone.ids[0]), f"clip {b}"
        assert bool((batched.ids[b, count:] == 0).all())
        solo_audio = tok.decode(alone)
        assert float((audio[b, :, :n] - solo_audio[0]).abs().max()) < 1e-5
        assert bool((audio[b, :, n:] == 0).all())
        item = batched.item(b)
        assert torch.equal(item.ids, alone.ids)


def test_equal_length_batch_matches_solo(tok: WavTokenizer) -> None:
    x = clip(3, 1, 240, seed=2)
    batched = tok.encode(x)
    for b in range(3):
        assert torch.equal(batched.ids[b], tok.encode(x[b : b + 1]).ids[0])


def test_near_tie_check_flags_equidistant_frames() -> None:
    model = zoo.create_tokenizer("wavtokenizer-tiny").eval()
    with torch.no_grad():
        model.quantizer.codebook[7] = model.quantizer.codebook[3]  # codes 3 and 7 tie exactly
    codes = model.quantizer.codebook.detach()
    latent = torch.stack([codes[[0, 1, 2, 4]], codes[[0, 1, 2, 3]]])
    assert model._near_ties(latent, [4, 4]) == [1]
    assert model._near_ties(latent, [4, 3]) == []  # the tie sits past clip 1's last token


def test_upstream_layout_round_trip(tok: WavTokenizer) -> None:
    tokens = tok.encode(clip(2, 1, 64, seed=3))
    upstream = tok.tokens_to_upstream(tokens)
    assert upstream.shape == (1, 2, 8)
    back = tok.tokens_from_upstream(upstream)
    assert torch.equal(back.ids, tokens.ids) and back.original_size is None
    assert tok.decode(back).shape == (2, 1, 8 * HOP)
    assert torch.equal(tok.tokens_from_upstream(upstream[:, :1]).ids, tokens.ids[:1])  # (1, B=1, T)
    assert torch.equal(tok.tokens_from_upstream(upstream[:, 0]).ids, tokens.ids[:1])  # (K=1, T)
    assert torch.equal(tok.tokens_from_upstream(upstream[0, 0]).ids, tokens.ids[:1])  # (T,)
    with pytest.raises(InputError, match="n_q == 1"):
        tok.tokens_from_upstream(torch.zeros(2, 1, 5, dtype=torch.long))


def test_embed_returns_code_vectors(tok: WavTokenizer) -> None:
    ids = torch.tensor([[0, 5, 63]])
    vectors = tok.embed(ids)
    assert vectors.shape == (1, 3, 16)
    assert torch.equal(vectors[0, 1], tok.quantizer.codebook[5])


def test_training_forward(tok: WavTokenizer) -> None:
    model = zoo.create_tokenizer("wavtokenizer-tiny")
    model.train()
    out = model(clip(2, 1, 64, seed=4))
    assert out["reconstruction"].shape == (2, 1, 64)
    assert out["ids"].shape == (2, 8) and "commitment" in out["losses"]
    (out["reconstruction"].square().mean() + sum(out["losses"].values())).backward()
    assert model.encoder.stem.weight.grad is not None


def test_resamples_other_rates_with_a_warning(tok: WavTokenizer) -> None:
    x = clip(1, 1, 1600, seed=5)
    with pytest.warns(UserWarning, match="resampling the 16000 Hz input"):
        tokens = tok.encode(x, sample_rate=16000)
    assert tokens.original_size.tolist() == [2400]
    assert tokens.ids.shape == (1, 2400 // HOP)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok.encode(x, sample_rate=24000)  # the model's own rate: no warning


@pytest.mark.parametrize(
    "x,match",
    [
        (torch.zeros(1, 2, 100), "channels"),  # stereo
        (torch.zeros(1, 1, 0), "empty"),
        (torch.zeros(1, 1, HOP - 1), "too short"),
        (torch.full((1, 1, 50), float("nan")), "NaN"),
        (torch.zeros(1, 1, 50, dtype=torch.int16), "floating point"),
        ("audio.wav", "torch.Tensor"),
    ],
)
def test_bad_audio_is_refused(tok: WavTokenizer, x: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        tok.encode(x)


def test_bad_lengths_and_options(tok: WavTokenizer) -> None:
    x = clip(2, 1, 64)
    with pytest.raises(InputError, match="one integer sample count per clip"):
        tok.encode(x, lengths=[64])
    with pytest.raises(InputError, match=r"lengths must lie in \[1, 64\]"):
        tok.encode(x, lengths=[64, 65])
    with pytest.raises(InputError, match="too short"):
        tok.encode(x, lengths=[64, 3])
    with pytest.raises(InputError, match="unknown encode option"):
        tok.encode(x, bandwidth=6.6)
    with pytest.raises(InputError, match="positive whole number"):
        tok.encode(x, sample_rate=-5)


@pytest.mark.parametrize(
    "ids,match",
    [
        (torch.tensor([[0, 64]]), r"\[0, 63\]"),  # >= codebook_size
        (torch.tensor([[-1, 3]]), r"\[0, 63\]"),
        (torch.tensor([[0.0, 1.0]]), "integer"),
        (torch.zeros(1, 0, dtype=torch.long), "empty"),
        (torch.zeros(1, 2, 3, dtype=torch.long), r"\(B, T\)"),
    ],
)
def test_bad_ids_are_refused(tok: WavTokenizer, ids: torch.Tensor, match: str) -> None:
    with pytest.raises(InputError, match=match):
        tok.decode(ids)


def test_bandwidth_id_changes_decoding(tok: WavTokenizer) -> None:
    ids = tok.encode(clip(1, 1, 64, seed=6)).ids
    with torch.no_grad():
        tok.backbone.norm.scale.weight[1].mul_(2.0)
    try:
        assert not torch.allclose(tok.decode(ids), tok.decode(ids, bandwidth_id=1))
    finally:
        with torch.no_grad():
            tok.backbone.norm.scale.weight[1].div_(2.0)
    with pytest.raises(InputError, match="bandwidth_id"):
        tok.decode(ids, bandwidth_id=4)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="hops"):
        zoo.create_tokenizer("wavtokenizer-tiny", hop_length=16)
    with pytest.raises(ConfigError, match="input_channels"):
        zoo.create_tokenizer("wavtokenizer-tiny", **{"backbone.input_channels": 8})


def test_save_and_load_round_trip(tok: WavTokenizer, tmp_path) -> None:
    x = clip(1, 1, 80, seed=7)
    tok.save_pretrained(tmp_path / "wt")
    loaded = zoo.from_pretrained(str(tmp_path / "wt"))
    assert isinstance(loaded, WavTokenizer)
    assert torch.equal(loaded.encode(x).ids, tok.encode(x).ids)
    assert torch.allclose(loaded.decode(tok.encode(x)), tok.decode(tok.encode(x)), atol=1e-6)


# -- converter -------------------------------------------------------------------------------------


def upstream_state(tok: WavTokenizer) -> dict[str, torch.Tensor]:
    """The tiny model written back in upstream's Lightning key layout (weight norm with g = ||v||)."""
    from zoo.layers.seanet import encodec_encoder_key_map

    state: dict[str, torch.Tensor] = {}
    own = tok.state_dict()
    for ours, theirs in encodec_encoder_key_map(tok.config.encoder).items():
        base = "feature_extractor.encodec.encoder." + theirs
        if ours == "lstm.lstm":
            for k, v in own.items():
                if k.startswith("encoder.lstm.lstm."):
                    state[f"{base}.{k.rsplit('.', 1)[1]}"] = v.clone()
            continue
        w = own[f"encoder.{ours}.weight"]
        state[base + ".weight_g"] = w.flatten(1).norm(dim=1).view(-1, 1, 1).clone()
        state[base + ".weight_v"] = w.clone()
        state[base + ".bias"] = own[f"encoder.{ours}.bias"].clone()
    cb = "feature_extractor.encodec.quantizer.vq.layers.0._codebook."
    state[cb + "inited"] = torch.ones(1)
    state[cb + "cluster_size"] = own["quantizer.cluster_size"].clone()
    state[cb + "embed"] = own["quantizer.codebook"].clone()
    state[cb + "embed_avg"] = own["quantizer.embed_avg"].clone()
    for k, v in own.items():
        if k.startswith(("backbone.", "head.")):
            state[k] = v.clone()
    state["feature_extractor.encodec.decoder.model.0.conv.conv.bias"] = torch.zeros(3)
    state["multiperioddisc.discriminators.0.convs.0.bias"] = torch.zeros(3)
    state["melspec_loss.mel_spec.mel_scale.fb"] = torch.zeros(3, 3)
    return state


TINY_UPSTREAM = {
    "sample_rate": 24000,
    "feature_extractor": {
        "class_path": "decoder.feature_extractors.EncodecFeatures",
        "init_args": {"num_quantizers": 1, "dowmsamples": [4, 2], "vq_bins": 64, "vq_kmeans": 10},
    },
    "backbone": {
        "class_path": "decoder.models.VocosBackbone",
        "init_args": {"input_channels": 512, "dim": 32, "intermediate_dim": 64, "num_layers": 2,
                      "adanorm_num_embeddings": 4},
    },
    "head": {"class_path": "decoder.heads.ISTFTHead", "init_args": {"dim": 32, "n_fft": 32, "hop_length": 8}},
}


def tiny_upstream_config() -> dict:
    import copy

    return copy.deepcopy(TINY_UPSTREAM)


@pytest.fixture(scope="module")
def tiny_for_conversion() -> WavTokenizer:
    """Upstream fixes n_filters 32, a 512-dim latent and 32 GroupNorm groups in pos_net; the rest stays tiny."""
    torch.manual_seed(1)
    dims = {"encoder.dimension": 512, "encoder.n_filters": 32, "backbone.input_channels": 512,
            "backbone.pos_net_groups": 32}
    return zoo.create_tokenizer("wavtokenizer-tiny", **dims).eval()


def test_converter_round_trip_from_upstream_layout(tiny_for_conversion: WavTokenizer) -> None:
    tok = tiny_for_conversion
    cfg = tiny_upstream_config()
    converted = zoo.convert("wavtokenizer", upstream_state(tok), cfg)
    assert converted.config.encoder.ratios == [4, 2] and converted.config.codebook_size == 64
    x = clip(2, 1, 77, seed=8)
    assert torch.equal(converted.encode(x).ids, tok.encode(x).ids)
    assert float((converted.decode(tok.encode(x)) - tok.decode(tok.encode(x))).abs().max()) < 1e-5
    # the whole Lightning dict and the full YAML are accepted too
    wrapped = {"state_dict": upstream_state(tok), "epoch": 3}
    full_yaml = {"model": {"class_path": "decoder.experiment.WavTokenizer", "init_args": cfg}}
    again = convert_wavtokenizer(wrapped, full_yaml)
    assert torch.equal(again.encode(x).ids, tok.encode(x).ids)


def test_converter_refuses_unknown_or_missing_keys(tiny_for_conversion: WavTokenizer) -> None:
    tok = tiny_for_conversion
    state = upstream_state(tok)
    state["backbone.extra_layer.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointError, match="backbone.extra_layer.weight"):
        convert_wavtokenizer(state, tiny_upstream_config())
    state = upstream_state(tok)
    state["some_new_module.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointError, match="unmapped upstream keys"):
        convert_wavtokenizer(state, tiny_upstream_config())
    state = upstream_state(tok)
    del state["feature_extractor.encodec.quantizer.vq.layers.0._codebook.embed"]
    with pytest.raises(CheckpointError, match="_codebook.embed"):
        convert_wavtokenizer(state, tiny_upstream_config())
    state = upstream_state(tok)
    del state["backbone.convnext.1.gamma"]
    with pytest.raises(CheckpointError, match="convnext.1.gamma"):
        convert_wavtokenizer(state, tiny_upstream_config())
    state = upstream_state(tok)
    state["feature_extractor.encodec.quantizer.vq.layers.0._codebook.inited"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="never initialised"):
        convert_wavtokenizer(state, tiny_upstream_config())
    with pytest.raises(CheckpointError, match="not a WavTokenizer"):
        convert_wavtokenizer({"model.weight": torch.zeros(1)}, tiny_upstream_config())


def test_converter_config_errors() -> None:
    with pytest.raises(ConfigError, match="needs the upstream config"):
        config_from_upstream(None)
    cfg = tiny_upstream_config()
    cfg["feature_extractor"]["init_args"]["num_quantizers"] = 2
    with pytest.raises(UnsupportedError, match="single-codebook"):
        config_from_upstream(cfg)
    cfg = tiny_upstream_config()
    cfg["head"]["class_path"] = "decoder.heads.IMDCTCosHead"
    with pytest.raises(UnsupportedError, match="IMDCTCosHead"):
        config_from_upstream(cfg)
    cfg = tiny_upstream_config()
    del cfg["backbone"]
    with pytest.raises(ConfigError, match="backbone"):
        config_from_upstream(cfg)


def test_converts_a_lightning_ckpt_file_read_without_code(tiny_for_conversion: WavTokenizer, tmp_path) -> None:
    """A published-style .ckpt (state_dict plus Lightning bookkeeping), read with weights_only=True."""
    from collections import OrderedDict

    from registry import convert_files

    tok = tiny_for_conversion
    ckpt = {
        "epoch": 3,
        "global_step": 1000,
        "pytorch-lightning_version": "1.8.6",
        "state_dict": OrderedDict(upstream_state(tok)),
        "optimizer_states": [],
        "lr_schedulers": [],
    }
    path = tmp_path / "wavtokenizer_tiny.ckpt"
    torch.save(ckpt, path)
    converted = convert_files("wavtokenizer", [path], tiny_upstream_config(), container=["state_dict"])
    x = clip(1, 1, 50, seed=9)
    assert torch.equal(converted.encode(x).ids, tok.encode(x).ids)


def test_one_token_clip_round_trip(tok: WavTokenizer) -> None:
    tokens = tok.encode(clip(1, 1, HOP, seed=10))
    assert tokens.ids.shape == (1, 1)
    assert tok.decode(tokens).shape == (1, 1, HOP)
