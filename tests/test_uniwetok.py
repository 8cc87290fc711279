"""UniWeTok on the tiny variant: token layout, bits <-> ids, noise, padding, converter, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import zoo.uniwetok as uw
from registry import convert, create_tokenizer
from registry.errors import CheckpointError, ConfigError, InputError
from zoo.tokens import Tokens


@pytest.fixture(scope="module")
def tok() -> uw.UniWeTokTokenizer:
    torch.manual_seed(0)
    return create_tokenizer("uniwetok-tiny").eval()


@pytest.fixture(scope="module")
def wide() -> uw.UniWeTokTokenizer:
    """Tiny widths but 128 bits per token, as the published model has."""
    torch.manual_seed(1)
    return create_tokenizer("uniwetok-tiny", z_channels=128, group_bits=8).eval()


def image(batch: int = 2, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, height, width, generator=g) * 2 - 1


def test_encode_gives_grouped_ids_and_bits(tok: uw.UniWeTokTokenizer) -> None:
    x = image()
    tokens = tok.encode(x)
    assert tokens.ids.shape == (2, 8, 8, 2) and tokens.ids.dtype == torch.int64
    assert tokens.grid == (8, 8) and tokens.codebook_sizes == (256, 256)
    bits = tok.encode_bits(x)
    assert set(torch.unique(bits).tolist()) <= {-1.0, 1.0}
    assert torch.equal(tok.to_bits(tokens), bits)
    with torch.no_grad():
        latent = tok.encode_latent(x)
    assert bool((latent.abs() < 1).all()), "SigLu bounds the latent to (-1, 1)"
    assert torch.equal(bits, torch.where(latent > 0, 1.0, -1.0))


@pytest.mark.parametrize("group_bits", [1, 4, 8, 16, 32])
def test_bits_ids_round_trip_for_128_bit_tokens(wide: uw.UniWeTokTokenizer, group_bits: int) -> None:
    g = torch.Generator().manual_seed(group_bits)
    bits = torch.randint(0, 2, (2, 3, 5, 128), generator=g) * 2 - 1
    tokens = wide.from_bits(bits, group_bits=group_bits)
    assert tokens.ids.shape == (2, 3, 5, 128 // group_bits)
    assert int(tokens.ids.max()) < 2**group_bits and tokens.codebook_sizes == (2**group_bits,) * (128 // group_bits)
    assert torch.equal(wide.to_bits(tokens), bits.float())
    # The language-model sequence round trip keeps the bits too.
    again = Tokens.from_sequence(tokens.to_sequence(), like=tokens)
    assert torch.equal(wide.to_bits(again), bits.float())


def test_group_order_is_documented_lsb_first(wide: uw.UniWeTokTokenizer) -> None:
    bits = -torch.ones(1, 2, 2, 128)
    bits[0, 0, 0, 0] = 1  # first bit of group 0 -> id 1
    bits[0, 0, 0, 15] = 1  # last bit of group 1 -> 2^7
    ids = wide.from_bits(bits).ids
    assert ids[0, 0, 0, 0] == 1 and ids[0, 0, 0, 1] == 128 and int(ids[0, 1:].sum()) == 0


def test_bit_conventions_agree(wide: uw.UniWeTokTokenizer) -> None:
    g = torch.Generator().manual_seed(3)
    positive = torch.rand(1, 2, 4, 128, generator=g) > 0.5
    as_pm1 = wide.from_bits(torch.where(positive, 1.0, -1.0)).ids
    assert torch.equal(wide.from_bits(positive.long()).ids, as_pm1)
    assert torch.equal(wide.from_bits(positive).ids, as_pm1)
    assert torch.equal(wide.from_bits(positive.numpy().astype(np.int8)).ids, as_pm1)


def test_upstream_layout_round_trip(wide: uw.UniWeTokTokenizer) -> None:
    g = torch.Generator().manual_seed(4)
    upstream = (torch.randint(0, 2, (2, 128, 3, 4), generator=g) * 2 - 1).float()
    tokens = wide.tokens_from_upstream(upstream)
    assert tokens.grid == (3, 4)
    back = wide.tokens_to_upstream(tokens)
    assert back.dtype == torch.float32 and torch.equal(back, upstream)
    noise = torch.randn(2, 128, 3, 4, generator=g)
    assert torch.equal(wide.noise_from_upstream(noise), noise.permute(0, 2, 3, 1))


def test_decode_with_noise_is_reproducible_and_noise_matters(tok: uw.UniWeTokTokenizer) -> None:
    tokens = tok.encode(image())
    noise = torch.randn(2, 8, 8, 16, generator=torch.Generator().manual_seed(0))
    a = tok.decode(tokens, noise=noise)
    b = tok.decode(tokens, noise=noise.clone())
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b)
    other = tok.decode(tokens, noise=torch.randn(2, 8, 8, 16, generator=torch.Generator().manual_seed(1)))
    assert float((a - other).abs().max()) > 1e-4, "the decoder must read the noise channels"
    s1 = tok.decode(tokens, generator=torch.Generator().manual_seed(7))
    s2 = tok.decode(tokens, generator=torch.Generator().manual_seed(7))
    assert torch.equal(s1, s2)


def test_generator_draws_in_upstream_layout(tok: uw.UniWeTokTokenizer) -> None:
    """Upstream draws randn_like(bits) on (B, z, h, w); a seeded generator gives that same draw."""
    tokens = tok.encode(image())
    upstream_noise = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(11))
    ours = tok.decode(tokens, generator=torch.Generator().manual_seed(11))
    ref = tok.decode(tokens, noise=tok.noise_from_upstream(upstream_noise))
    assert torch.equal(ours, ref)


def test_odd_sizes_are_padded_and_trimmed(tok: uw.UniWeTokTokenizer) -> None:
    x = image(1, 30, 45)
    tokens = tok.encode(x)
    assert tokens.grid == (8, 12)
    assert tokens.original_size.tolist() == [[30, 45]]
    padded = torch.nn.functional.pad(x, (0, 3, 0, 2))
    assert torch.equal(tokens.ids, tok.encode(padded).ids), "padding is zeros at the bottom/right"
    out = tok.decode(tokens, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 30, 45)


def test_tiny_images_get_at_least_two_tokens_per_side(tok: uw.UniWeTokTokenizer) -> None:
    tokens = tok.encode(image(1, 3, 5))
    assert tokens.grid == (2, 2)
    out = tok.decode(tokens, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 3, 5) and bool(torch.isfinite(out).all())


def test_encoder_grid_of_one_is_refused(tok: uw.UniWeTokTokenizer) -> None:
    with pytest.raises(InputError, match="at least 2x2 tokens"):
        tok.encode_ids(image(1, 4, 32))


def test_batch_items_match_single_encodes(tok: uw.UniWeTokTokenizer) -> None:
    x = image(3, 32, 40, seed=5)
    together = tok.encode(x).ids
    for i in range(3):
        assert torch.equal(tok.encode(x[i : i + 1]).ids, together[i : i + 1])


def test_tokens_save_load_decode(tok: uw.UniWeTokTokenizer, tmp_path) -> None:
    tokens = tok.encode(image(1, 28, 32))
    path = tokens.save(tmp_path / "t.safetensors")
    loaded = Tokens.load(path)
    noise = torch.randn(1, 7, 8, 16)
    assert torch.equal(tok.decode(loaded, noise=noise), tok.decode(tokens, noise=noise))


def test_checkpoint_round_trip_keeps_config_and_tokens(tmp_path) -> None:
    from registry import from_pretrained

    model = create_tokenizer("uniwetok-tiny", group_bits=4).eval()
    model.save_pretrained(tmp_path / "ckpt")
    loaded = from_pretrained(tmp_path / "ckpt")
    assert loaded.config == model.config and loaded.spec.codebook_sizes == (16,) * 4
    x = image(1)
    assert torch.equal(loaded.encode(x).ids, model.encode(x).ids)


def test_embed_is_the_bits(tok: uw.UniWeTokTokenizer) -> None:
    tokens = tok.encode(image())
    assert torch.equal(tok.embed(tokens.ids), tok.to_bits(tokens))


def test_training_forward_passes_gradients_through_the_sign(tok: uw.UniWeTokTokenizer) -> None:
    model = create_tokenizer("uniwetok-tiny").train()
    out = model(image(2, 32, 32))
    assert out["reconstruction"].shape == (2, 3, 32, 32)
    out["loss"].backward()
    grad = model.encoder.conv_in.weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0


def test_spec() -> None:
    with torch.device("meta"):
        big = create_tokenizer("uniwetok-d32c128")
    spec = big.spec
    assert spec.kind == "binary" and spec.bits_per_token == 128 and spec.tokens_per_item == 64
    assert spec.downsample == (32, 32) and spec.codebook_sizes == (256,) * 16 and spec.stochastic_decode
    assert spec.bits_per_position == 128


def test_published_variant_is_not_pretend_pinned() -> None:
    from registry import from_pretrained

    with pytest.raises(ConfigError, match="no pretrained weights"):
        from_pretrained("uniwetok-d32c128")


# -- bad input ------------------------------------------------------------------------------------


def test_bits_of_wrong_width_are_refused(wide: uw.UniWeTokTokenizer) -> None:
    with pytest.raises(InputError, match="128 bits wide"):
        wide.from_bits(torch.ones(1, 2, 2, 64))
    with pytest.raises(InputError, match="128 bits wide"):
        wide.tokens_from_upstream(torch.ones(1, 2, 2, 128))  # channels-last given where upstream is (B, z, h, w)


@pytest.mark.parametrize(
    ("values", "message"),
    [((0.5, -1.0), "other values"), ((2.0, 1.0), "other values"), ((-1.0, 0.0), "both -1 and 0")],
)
def test_bits_with_other_values_are_refused(wide: uw.UniWeTokTokenizer, values, message: str) -> None:
    bits = torch.full((1, 2, 2, 128), values[1])
    bits[0, 0, 0, 0] = values[0]
    with pytest.raises(InputError, match=message):
        wide.from_bits(bits)


def test_grouped_ids_out_of_range_are_refused(tok: uw.UniWeTokTokenizer) -> None:
    ids = torch.zeros(1, 4, 4, 2, dtype=torch.long)
    ids[0, 0, 0, 1] = 256
    with pytest.raises(InputError, match=r"\[0, 255\]"):
        tok.decode(ids)
    ids[0, 0, 0, 1] = -1
    with pytest.raises(InputError, match=r"\[0, 255\]"):
        tok.decode(ids)


def test_ids_of_wrong_layout_or_dtype_are_refused(tok: uw.UniWeTokTokenizer) -> None:
    with pytest.raises(InputError, match=r"\(B, h, w, 2\)"):
        tok.decode(torch.zeros(1, 4, 4, 3, dtype=torch.long))
    with pytest.raises(InputError, match="integers"):
        tok.decode(torch.zeros(1, 4, 4, 2))
    with pytest.raises(InputError, match="at least 2 tokens"):
        tok.decode(torch.zeros(1, 1, 1, 2, dtype=torch.long))


def test_noise_of_wrong_shape_is_refused(tok: uw.UniWeTokTokenizer) -> None:
    tokens = tok.encode(image(1))
    with pytest.raises(InputError, match="noise_from_upstream"):
        tok.decode(tokens, noise=torch.randn(1, 16, 8, 8))
    with pytest.raises(InputError, match="float"):
        tok.decode(tokens, noise=torch.zeros(1, 8, 8, 16, dtype=torch.long))


def test_foreign_tokens_are_refused(tok: uw.UniWeTokTokenizer) -> None:
    foreign = Tokens(ids=torch.zeros(1, 4, 4, 3, dtype=torch.long), modality="image", codebook_sizes=(1000,) * 3,
                     grid=(4, 4))
    with pytest.raises(InputError, match="not made by uniwetok"):
        tok.decode(foreign)


def test_bad_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="num_heads"):
        create_tokenizer("uniwetok-tiny", num_heads=3)
    with pytest.raises(ConfigError, match="group_bits"):
        create_tokenizer("uniwetok-tiny", group_bits=5)


# -- converter ------------------------------------------------------------------------------------


def tiny_upstream_ddconfig() -> dict:
    return {"ddconfig": {"double_z": False, "z_channels": 16, "in_channels": 3, "out_ch": 3, "ch": 32,
                         "ch_mult": [1, 1, 2], "num_res_blocks": 1, "resolution": 32, "attn_blocks": 1,
                         "n_heads": 2}}


def upstream_weights(tok: uw.UniWeTokTokenizer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in uw.upstream_state_dict(tok).items()}


def test_key_names_follow_upstream(tok: uw.UniWeTokTokenizer) -> None:
    keys = set(uw.upstream_state_dict(tok))
    for key in ("encoder.down.0.block.0.norm1.weight", "encoder.down.1.downsample.bias",
                "encoder.register_token.weight", "encoder.mid_attn_blocks.0.attention.wqkv.weight",
                "encoder.mid_attn_blocks.0.feed_forward.w1.weight", "decoder.mid_block.0.conv2.weight",
                "decoder.adaptive.2.gamma.weight", "decoder.up.1.block.0.nin_shortcut.weight",
                "decoder.up.2.upsample.conv1.weight", "decoder.conv_out.bias"):
        assert key in keys, key
    assert all(uw.our_key(uw.upstream_key(k)) == k for k in tok.state_dict())


def test_convert_round_trip(tok: uw.UniWeTokTokenizer) -> None:
    converted = convert("uniwetok", upstream_weights(tok), tiny_upstream_ddconfig())
    x = image()
    assert torch.equal(converted.encode(x).ids, tok.encode(x).ids)
    noise = torch.randn(2, 8, 8, 16)
    ids = tok.encode(x).ids
    assert torch.equal(converted.decode(ids, noise=noise), tok.decode(ids, noise=noise))


def test_convert_reads_sizes_from_weights_and_takes_the_wrapped_form(tok: uw.UniWeTokTokenizer) -> None:
    converted = convert("uniwetok", {"state_dict": upstream_weights(tok)}, None, num_heads=2)
    assert converted.config.channel_mult == [1, 1, 2] and converted.config.z_channels == 16
    assert converted.config.num_res_blocks == 1 and converted.config.attn_blocks == 1


def test_convert_prefers_ema_and_drops_training_modules(tok: uw.UniWeTokTokenizer) -> None:
    state = upstream_weights(tok)
    ema_value = torch.full_like(state["encoder.conv_in.weight"], 0.125)
    state["model_ema.encoderconv_inweight"] = ema_value
    state["model_ema.decay"] = torch.tensor(0.999)
    state["loss.discriminator.main.0.weight"] = torch.randn(4, 3, 3, 3)
    converted = convert("uniwetok", state, tiny_upstream_ddconfig())
    assert torch.equal(converted.encoder.conv_in.weight.detach(), ema_value)
    assert torch.equal(converted.decoder.conv_out.weight.detach(), tok.decoder.conv_out.weight.detach())


def test_convert_refuses_unmapped_and_missing_keys(tok: uw.UniWeTokTokenizer) -> None:
    state = upstream_weights(tok)
    state["encoder.semantic_head.weight"] = torch.randn(3, 3)
    with pytest.raises(CheckpointError, match="encoder.semantic_head.weight"):
        convert("uniwetok", state, tiny_upstream_ddconfig())
    state = upstream_weights(tok)
    del state["decoder.adaptive.1.beta.bias"]
    with pytest.raises(CheckpointError, match="decoder.adaptive.1.beta.bias"):
        convert("uniwetok", state, tiny_upstream_ddconfig())


def test_convert_refuses_a_config_that_does_not_fit(tok: uw.UniWeTokTokenizer) -> None:
    cfg = tiny_upstream_ddconfig()
    cfg["ddconfig"]["ch_mult"] = [1, 2, 2]
    with pytest.raises(CheckpointError, match="channel_mult"):
        convert("uniwetok", upstream_weights(tok), cfg)
    cfg = tiny_upstream_ddconfig()
    cfg["ddconfig"]["use_fancy"] = True
    with pytest.raises(ConfigError, match="use_fancy"):
        convert("uniwetok", upstream_weights(tok), cfg)


def test_bitdance_autoencoder_weights_are_refused() -> None:
    """BitDance's autoencoder.py (no SigLu, no attention, encoder mid blocks) is another architecture."""
    state = {"encoder.conv_in.weight": torch.randn(32, 3, 3, 3), "encoder.conv_out.weight": torch.randn(16, 32, 1, 1),
             "decoder.conv_out.weight": torch.randn(3, 32, 3, 3),
             "encoder.down.0.block.0.conv1.weight": torch.randn(32, 32, 3, 3),
             "encoder.mid_block.0.conv1.weight": torch.randn(32, 32, 3, 3)}
    with pytest.raises(CheckpointError):
        convert("uniwetok", state, None)
