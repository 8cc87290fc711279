"""OmniTokenizer on the tiny variant: layouts, padding and cropping, batching, converter, bad input."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import zoo.omnitokenizer as om
from registry import convert, create_tokenizer
from registry.config import load_variant_config
from registry.errors import CheckpointError, ConfigError, InputError, UnsupportedError
from zoo.layers.attention import attention_backend
from zoo.tokens import Tokens

TINY_ARGS = {
    "patch_embed": "linear", "patch_size": 4, "temporal_patch_size": 4, "embedding_dim": 32, "heads": 2,
    "dim_head": 16, "enc_block": "tw", "dec_block": "tt", "temporal_depth": 2, "twod_window_size": 2,
    "spatial_pos": "rope", "n_codes": 64, "codebook_dim": 4, "l2_code": True, "use_vae": False,
    # the published .ckpt hparams spell these with upstream's typo (its issues #13, #20)
    "casual_in_temporal_transformer": True, "casual_in_peg": True,
}


@pytest.fixture(scope="module")
def tok() -> om.OmniTokenizer:
    torch.manual_seed(0)
    return create_tokenizer("omnitokenizer-tiny").eval()


def video(batch: int = 1, frames: int = 9, height: int = 16, width: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, height, width, generator=g) * 2 - 1


# ------------------------------------------------------------------------------------------- layouts


def test_image_tokens_layout_and_round_trip(tok: om.OmniTokenizer) -> None:
    x = video(batch=2, frames=1, height=16, width=24)[:, :, 0]
    tokens = tok.encode(x)
    assert tokens.modality == "image" and tokens.ids.shape == (2, 4, 6) and tokens.grid == (4, 6)
    assert tokens.codebook_sizes == (64,) and tokens.ids.dtype == torch.int64
    assert tokens.original_size.tolist() == [[16, 24], [16, 24]]
    out = tok.decode(tokens)
    assert out.shape == x.shape and bool(torch.isfinite(out).all())


@pytest.mark.parametrize(("frames", "latent_frames"), [(1, 1), (2, 2), (5, 2), (7, 3), (9, 3), (10, 4)])
def test_any_frame_count_is_padded_then_trimmed(tok: om.OmniTokenizer, frames: int, latent_frames: int) -> None:
    x = video(frames=frames)
    tokens = tok.encode(x)
    assert tokens.modality == "video" and tokens.ids.shape == (1, latent_frames, 4, 6)
    assert tokens.original_size.tolist() == [[frames, 16, 24]]
    assert tokens.meta["padded_size"][0] == 1 + 4 * (latent_frames - 1)
    assert tok.decode(tokens).shape == x.shape
    assert tok.decode(tokens.ids).shape[2] == 1 + 4 * (latent_frames - 1), "raw ids decode uncropped"


def test_frame_padding_repeats_the_last_frame(tok: om.OmniTokenizer) -> None:
    x = video(frames=6)
    padded = torch.cat([x, x[:, :, -1:].expand(-1, -1, 3, -1, -1)], dim=2)
    with torch.no_grad():
        assert torch.equal(tok.encode(x).ids, tok.encode_ids(padded))


def test_sizes_not_divisible_are_padded_by_edge_replication_and_cropped(tok: om.OmniTokenizer) -> None:
    x = video(frames=5, height=13, width=19)
    tokens = tok.encode(x)
    assert tok.spatial_multiple == 8 and tokens.ids.shape == (1, 2, 4, 6)
    assert tokens.meta["padded_size"] == [5, 16, 24]
    with torch.no_grad():
        expected = tok.encode_ids(F.pad(x, (0, 5, 0, 3, 0, 0), mode="replicate"))
    assert torch.equal(tokens.ids, expected)
    assert tok.decode(tokens).shape == x.shape


def test_valid_sizes_are_not_padded(tok: om.OmniTokenizer) -> None:
    x = video(frames=5, height=16, width=24)
    assert tok.pad_video(x) is x
    assert tok.encode(x).meta["padded_size"] == [5, 16, 24]


def test_an_image_is_a_one_frame_video(tok: om.OmniTokenizer) -> None:
    x = video(frames=1)
    image_tokens, video_tokens = tok.encode(x[:, :, 0]), tok.encode(x)
    assert torch.equal(image_tokens.ids, video_tokens.ids[:, 0])
    assert torch.allclose(tok.decode(image_tokens), tok.decode(video_tokens)[:, :, 0])


def test_a_list_of_frames_is_a_video(tok: om.OmniTokenizer) -> None:
    x = video(frames=5)
    frames = [x[0, :, t] for t in range(5)]
    assert torch.equal(tok.encode(frames).ids, tok.encode(x).ids)
    assert torch.equal(tok.encode([f.numpy() for f in frames]).ids, tok.encode(x).ids)


def test_batch_items_get_the_tokens_they_get_alone(tok: om.OmniTokenizer) -> None:
    x = torch.cat([video(seed=1), video(seed=2)])
    batched = tok.encode(x)
    for i in range(2):
        assert torch.equal(batched.ids[i : i + 1], tok.encode(x[i : i + 1]).ids)
    decoded = tok.decode(batched)
    assert torch.allclose(decoded[1:], tok.decode(batched.item(1)), atol=1e-5)


def test_chunked_inference_equals_whole(tok: om.OmniTokenizer) -> None:
    torch.manual_seed(0)
    small = create_tokenizer("omnitokenizer-tiny", chunk_tokens=7).eval()
    small.load_state_dict(tok.state_dict())
    x = video(frames=9, height=32, width=24)
    with torch.no_grad():
        ids = tok.encode_ids(x)
        assert torch.equal(small.encode_ids(x), ids)
        assert torch.allclose(small.decode_ids(ids), tok.decode_ids(ids), atol=1e-5)


def test_attention_backends_agree(tok: om.OmniTokenizer) -> None:
    x = video(frames=5)
    with torch.no_grad():
        with attention_backend("math"):
            reference = tok.encode_latent(x)
        with attention_backend("sdpa"):
            fast = tok.encode_latent(x)
    assert torch.allclose(fast, reference, atol=1e-5)


def test_legacy_attention_path_changes_only_videos() -> None:
    torch.manual_seed(3)
    sdpa = create_tokenizer("omnitokenizer-tiny").eval()
    legacy = create_tokenizer("omnitokenizer-tiny", attention_path="legacy").eval()
    legacy.load_state_dict(sdpa.state_dict())
    x = video(frames=9)
    with torch.no_grad():
        assert torch.allclose(legacy.encode_latent(x[:, :, 0]), sdpa.encode_latent(x[:, :, 0]), atol=1e-6)
        assert not torch.allclose(legacy.encode_latent(x), sdpa.encode_latent(x), atol=1e-3), "ALiBi is applied"


def test_rel_positions_on_the_legacy_path_have_their_bias_mlp() -> None:
    rel = create_tokenizer("omnitokenizer-tiny", spatial_pos="rel", attention_path="legacy").eval()
    assert rel.encoder.spatial.blocks[0].attn.position_bias is not None
    assert rel.encoder.temporal.blocks[0].attn.position_bias is None
    plain = create_tokenizer("omnitokenizer-tiny", spatial_pos="rel").eval()
    assert plain.encoder.spatial.blocks[0].attn.position_bias is None, "upstream's SDPA path drops it"
    with torch.no_grad():
        assert rel.encode(video(frames=5)).ids.shape == (1, 2, 4, 6)


def test_embed_reads_raw_codebook_rows(tok: om.OmniTokenizer) -> None:
    ids = torch.tensor([[0, 5], [63, 7]])
    assert torch.equal(tok.embed(ids), tok.quantizer.codebook.detach()[ids])


def test_upstream_id_layout_round_trip(tok: om.OmniTokenizer) -> None:
    image_tokens = tok.encode(video(frames=1)[:, :, 0])
    upstream = tok.tokens_to_upstream(image_tokens)
    assert upstream.shape == (1, 1, 4, 6)
    assert torch.equal(tok.tokens_from_upstream(upstream).ids, image_tokens.ids)
    square = torch.arange(16).reshape(1, 16)
    assert tok.tokens_from_upstream(square).ids.shape == (1, 4, 4)
    video_tokens = tok.encode(video(frames=9))
    back = tok.tokens_from_upstream(tok.tokens_to_upstream(video_tokens).numpy())
    assert back.modality == "video" and torch.equal(back.ids, video_tokens.ids)
    one_frame = tok.tokens_from_upstream(upstream, modality="video")
    assert one_frame.modality == "video" and one_frame.ids.shape == (1, 1, 4, 6)


def test_training_forward_gives_losses_and_gradients() -> None:
    torch.manual_seed(0)
    model = create_tokenizer("omnitokenizer-tiny").train()
    out = model(video(frames=5))
    loss = sum(out["losses"].values())
    loss.backward()
    assert {"reconstruction", "commitment"} <= set(out["losses"])
    assert out["reconstruction"].shape == (1, 3, 5, 16, 24)
    assert model.encoder.first_frame_embed.proj.weight.grad is not None


def test_tokens_save_and_decode_after_load(tok: om.OmniTokenizer, tmp_path) -> None:
    tokens = tok.encode(video(frames=6, height=13, width=19))
    loaded = Tokens.load(tokens.save(tmp_path / "t.safetensors"))
    assert torch.equal(tok.decode(loaded), tok.decode(tokens))


# ---------------------------------------------------------------------------------------- bad input


def test_a_video_of_zero_frames_is_refused(tok: om.OmniTokenizer) -> None:
    with pytest.raises(InputError, match="0 frames"):
        tok.encode(torch.zeros(1, 3, 0, 16, 16))
    with pytest.raises(InputError, match="0 frames"):
        tok.encode([])


def test_frames_of_different_sizes_are_refused(tok: om.OmniTokenizer) -> None:
    with pytest.raises(InputError, match="different sizes"):
        tok.encode([torch.zeros(3, 16, 16), torch.zeros(3, 16, 24)])


def test_ids_out_of_range_or_of_the_wrong_kind_are_refused(tok: om.OmniTokenizer) -> None:
    with pytest.raises(InputError, match=r"\[0, 63\]"):
        tok.decode(torch.full((1, 4, 6), 64))
    with pytest.raises(InputError, match=r"\[0, 63\]"):
        tok.decode(torch.full((1, 4, 6), -1))
    with pytest.raises(InputError, match="integer"):
        tok.decode(torch.zeros(1, 4, 6))
    with pytest.raises(InputError, match=r"\(B, h, w\)"):
        tok.decode(torch.zeros(24, dtype=torch.long))
    with pytest.raises(InputError, match=r"\[0, 63\]"):
        tok.embed(torch.tensor([64]))


def test_other_bad_input_is_refused(tok: om.OmniTokenizer) -> None:
    with pytest.raises(InputError, match="channels"):
        tok.encode(torch.zeros(1, 1, 5, 16, 16))
    with pytest.raises(InputError, match="NaN"):
        tok.encode(torch.full((1, 3, 16, 16), float("nan")))
    with pytest.raises(InputError, match="floating point"):
        tok.encode(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(InputError, match="laid out"):
        tok.encode(torch.zeros(1, 1, 3, 4, 16, 16))
    tokens = tok.encode(torch.cat([video(frames=5)] * 2))
    tokens.original_size[1, 0] = 3
    with pytest.raises(InputError, match="one at a time"):
        tok.decode(tokens)


def test_window_decoders_refuse_grids_that_are_not_whole_windows() -> None:
    model = create_tokenizer("omnitokenizer-tiny", dec_block="tw").eval()
    with pytest.raises(InputError, match="multiple of 2"):
        model.decode(torch.zeros(1, 3, 5, dtype=torch.long))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [({"enc_block": "tq"}, "block kinds"), ({"attention_path": "flash"}, "attention_path"),
     ({"spatial_pos": "abs"}, "spatial_pos"), ({"dim_head": 18}, "multiple of 4"), ({"pad_mode": "wrap"}, "pad_mode")],
)
def test_bad_configs_are_refused(overrides: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        create_tokenizer("omnitokenizer-tiny", **overrides)


# ---------------------------------------------------------------------------------------- converter


def upstream_names(model: om.OmniTokenizer) -> dict[str, torch.Tensor]:
    """Our tiny model's weights under upstream's VQGAN key names, with upstream's extra tensors."""
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        up = key
        for ours, theirs in (("encoder.first_frame_embed.", "encoder.to_patch_emb_first_frame."),
                             ("encoder.frames_embed.", "encoder.to_patch_emb.")):
            if up.startswith(ours):
                part = {"norm_in": "1", "proj": "2", "norm_out": "3"}[up[len(ours):].split(".")[0]]
                up = theirs + part + "." + up.split(".")[-1]
        up = up.replace("decoder.first_frame_out.", "decoder.to_pixels_first_frame.0.")
        up = up.replace("decoder.frames_out.", "decoder.to_pixels.0.")
        up = re.sub(r"^(en|de)coder\.(spatial|temporal)\.",
                    lambda m: f"{m.group(1)}coder.{m.group(1)[:2].replace('en', 'enc').replace('de', 'dec')}"
                    f"_{m.group(2)}_transformer.", up)
        up = re.sub(r"\.norm_out\.weight$", ".norm_out.gamma", up)
        up = re.sub(r"\.norm_out\.bias$", ".norm_out.beta", up)
        up = re.sub(r"\.blocks\.(\d+)\.attn\.norm\.weight$", r".layers.\1.1.norm.gamma", up)
        up = re.sub(r"\.blocks\.(\d+)\.attn\.norm\.bias$", r".layers.\1.1.norm.beta", up)
        up = re.sub(r"\.blocks\.(\d+)\.peg\.conv\.", r".layers.\1.0.dsconv.", up)
        up = re.sub(r"\.blocks\.(\d+)\.attn\.position_bias\.", r".layers.\1.1.spatial_rel_pos_bias.", up)
        up = re.sub(r"\.blocks\.(\d+)\.attn\.", r".layers.\1.1.", up)
        up = re.sub(r"\.blocks\.(\d+)\.ff\.norm\.", r".layers.\1.3.0.", up)
        up = re.sub(r"\.blocks\.(\d+)\.ff\.proj_in\.", r".layers.\1.3.1.", up)
        up = re.sub(r"\.blocks\.(\d+)\.ff\.proj_out\.", r".layers.\1.3.4.", up)
        up = up.replace("quantizer.codebook", "codebook.embeddings")
        up = up.replace("post_quant_proj.", "post_vq_conv.1.").replace("quant_proj.", "pre_vq_conv.1.")
        out[up] = value.clone()
    for key in list(out):
        if key.endswith(".1.q_scale"):  # every upstream Attention has a context norm
            out[key.replace("q_scale", "context_norm.gamma")] = torch.ones(32)
            out[key.replace("q_scale", "context_norm.beta")] = torch.zeros(32)
            if "temporal" in key:  # built with the default spatial_pos='rel', never applied
                out[key.replace("q_scale", "spatial_rel_pos_bias.net.2.weight")] = torch.randn(2, 32)
        if key.endswith(".1.relative_position_bias_table"):
            out[key.replace("bias_table", "index")] = om.window_relative_index(2)
    out.update({
        "codebook.N": torch.ones(64), "codebook.z_avg": torch.randn(64, 4), "codebook.codebook_usage": torch.rand(64),
        "image_discriminator.model0.0.weight": torch.randn(4), "video_discriminator.model0.0.weight": torch.randn(4),
        "perceptual_model.net.slice1.0.weight": torch.randn(2),
    })
    return out


def test_converter_maps_upstream_keys_and_drops_training_tensors(tok: om.OmniTokenizer) -> None:
    state = upstream_names(tok)
    assert "encoder.enc_spatial_transformer.layers.1.1.relative_position_bias_table" in state
    converted = convert("omnitokenizer", {"state_dict": state}, {"args": TINY_ARGS})
    assert converted.config.causal_temporal and converted.config.causal_peg
    x = video(frames=9)
    with torch.no_grad():
        ids = tok.encode_ids(x)
        assert torch.equal(converted.encode_ids(x), ids)
        assert torch.equal(converted.decode_ids(ids), tok.decode_ids(ids))


def test_converter_reads_shapes_from_the_weights_without_a_config(tok: om.OmniTokenizer) -> None:
    converted = convert("omnitokenizer", upstream_names(tok))
    for name in ("patch_size", "temporal_patch_size", "dim", "heads", "dim_head", "enc_block", "dec_block",
                 "temporal_depth", "window_size", "n_codes", "codebook_dim", "spatial_pos"):
        assert getattr(converted.config, name) == getattr(tok.config, name), name


def test_converter_refuses_what_does_not_fit(tok: om.OmniTokenizer) -> None:
    state = upstream_names(tok)
    with pytest.raises(CheckpointError, match="unexpected keys"):
        convert("omnitokenizer", {**state, "encoder.extra.weight": torch.zeros(1)}, {"args": TINY_ARGS})
    with pytest.raises(CheckpointError, match="patch_size=8"):
        convert("omnitokenizer", state, {"args": {**TINY_ARGS, "patch_size": 8}})
    with pytest.raises(ConfigError, match="must agree"):
        convert("omnitokenizer", state, {"args": {**TINY_ARGS, "causal_in_peg": False}})
    with pytest.raises(UnsupportedError, match="VAE"):
        convert("omnitokenizer", state, {"args": {**TINY_ARGS, "use_vae": True}})
    with pytest.raises(UnsupportedError, match="patch embedding"):
        convert("omnitokenizer", state, {"args": {**TINY_ARGS, "patch_embed": "cnn"}})
    bad_index = dict(state)
    key = next(k for k in state if k.endswith("relative_position_index"))
    bad_index[key] = torch.zeros_like(state[key])
    with pytest.raises(CheckpointError, match="relative index"):
        convert("omnitokenizer", bad_index, {"args": TINY_ARGS})
    with pytest.raises(CheckpointError, match="OmniTokenizer"):
        convert("omnitokenizer", {"weight": torch.zeros(1)}, None)


def test_rel_position_checkpoints_convert_on_both_attention_paths() -> None:
    torch.manual_seed(5)
    legacy = create_tokenizer("omnitokenizer-tiny", spatial_pos="rel", attention_path="legacy").eval()
    state = upstream_names(legacy)
    assert any("enc_spatial_transformer.layers.0.1.spatial_rel_pos_bias.net.0.0.weight" in k for k in state)
    converted = convert("omnitokenizer", state, {"attention_path": "legacy"})
    assert converted.config.spatial_pos == "rel", "read from the weights: spatial layers carry the bias MLP"
    x = video(frames=5)
    with torch.no_grad():
        assert torch.equal(converted.encode_ids(x), legacy.encode_ids(x))
    sdpa = convert("omnitokenizer", state, {"args": {"spatial_pos": "rel"}})  # upstream's default branch
    assert sdpa.config.attention_path == "sdpa"
    assert sdpa.encoder.spatial.blocks[0].attn.position_bias is None, "built upstream, never applied: dropped"


def test_save_and_load_pretrained_round_trip(tok: om.OmniTokenizer, tmp_path) -> None:
    import zoo

    tok.save_pretrained(tmp_path / "omni")
    back = zoo.from_pretrained(tmp_path / "omni")
    x = video(frames=5)
    assert type(back) is om.OmniTokenizer and back.config == tok.config
    assert torch.equal(back.encode(x).ids, tok.encode(x).ids)


def test_the_correctly_spelled_flags_are_read_too(tok: om.OmniTokenizer) -> None:
    args = {k: v for k, v in TINY_ARGS.items() if not k.startswith("casual")}
    args["causal_in_temporal_transformer"] = False
    converted = convert("omnitokenizer", upstream_names(tok), {"args": args})
    assert converted.config.causal_temporal is False and converted.config.causal_peg is True


# ----------------------------------------------------------------------------------------- variants

PUBLISHED = [
    "imagenet-k600", "imagenet-ucf", "imagenet-mit", "imagenet-sthv2", "imagenet-only", "celebahq", "ffhq",
    "celebahq-ucf", "celebahq-k600", "ffhq-ucf", "ffhq-k600",
]


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_variants_are_pinned_and_consistent(name: str) -> None:
    cfg = load_variant_config(f"omnitokenizer-{name}")
    up = cfg.upstream
    assert up.repo == "Daniel0724/OmniTokenizer" and up.filename == name.replace("-", "_") + ".ckpt"
    assert re.fullmatch(r"[0-9a-f]{40}", up.revision)
    assert up.sha256 is None if name == "ffhq-ucf" else re.fullmatch(r"[0-9a-f]{64}", up.sha256)
    assert list(up.container) == ["state_dict"]
    args, model = up.config.args, cfg.model
    assert up.config.attention_path == model.attention_path
    pairs = {"patch_size": "patch_size", "temporal_patch_size": "temporal_patch_size", "embedding_dim": "dim",
             "enc_block": "enc_block", "dec_block": "dec_block", "twod_window_size": "window_size",
             "spatial_pos": "spatial_pos", "n_codes": "n_codes", "codebook_dim": "codebook_dim"}
    for theirs, ours in pairs.items():
        if theirs in args:
            assert args[theirs] == model[ours], theirs
    with torch.device("meta"):
        built = create_tokenizer(f"omnitokenizer-{name}")
    assert built.spec.codebook_sizes == (8192,) and built.spec.downsample[1:] == (8, 8)


def test_spec_describes_the_joint_tokenizer(tok: om.OmniTokenizer) -> None:
    spec = tok.spec
    assert spec.modality == "video" and spec.downsample == (4, 4, 4) and spec.codebook_sizes == (64,)
    assert "images" in spec.notes and spec.can_decode
    assert np.isclose(spec.bits_per_position, 6.0)
