"""UniFlow (tiny): continuous tokens, reproducible flow decoding, sampler options, layouts, converter, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import registry
from registry import create_tokenizer
from registry.errors import CheckpointError, ConfigError, InputError
from zoo.layers import flow
from zoo.tokens import Tokens
from zoo.uniflow import (
    UniFlowTokenizer,
    config_from_upstream,
    image_to_patches,
    patches_to_image,
    upstream_state_dict,
)

SIDE, PATCH, GRID, LATENT = 32, 8, 4, 8  # uniflow-tiny


@pytest.fixture(scope="module")
def tok() -> UniFlowTokenizer:
    torch.manual_seed(0)
    t = create_tokenizer("uniflow-tiny").eval()
    # Random init zeroes nothing here, but make the flow head's output depend on every input clearly.
    with torch.no_grad():
        for p in t.flow_head.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return t


def images(b: int = 2, h: int = SIDE, w: int = SIDE, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_spec_describes_continuous_stochastic_tokens(tok) -> None:
    spec = tok.spec
    assert spec.kind == "continuous" and spec.latent_dim == LATENT and spec.codebook_sizes == ()
    assert spec.tokens_per_item == GRID * GRID and spec.downsample == (PATCH, PATCH)
    assert spec.input_size == (SIDE, SIDE) and spec.stochastic_decode and spec.can_decode
    assert spec.bitrate is None


def test_published_variant_spec_without_weights() -> None:
    import zoo

    info = zoo.info("uniflow-internvit300m-448")
    spec = info["spec"]
    assert spec.tokens_per_item == 1024 and spec.latent_dim == 64 and spec.input_size == (448, 448)
    assert info["parameters"] == 452_586_124  # every tensor of upstream's state dict (the fixture manifest)


def test_encode_gives_a_latent_grid_and_decode_the_image_size(tok) -> None:
    tokens = tok.encode(images())
    assert tokens.ids is None and tokens.latent.shape == (2, GRID, GRID, LATENT) and tokens.grid == (GRID, GRID)
    out = tok.decode(tokens, generator=torch.Generator().manual_seed(1))
    assert out.shape == (2, 3, SIDE, SIDE) and bool(torch.isfinite(out).all())


def test_small_images_are_padded_and_cropped_back(tok) -> None:
    x = images(1, 20, 27)
    tokens = tok.encode(x)
    assert tokens.original_size.tolist() == [[20, 27]]
    padded = torch.nn.functional.pad(x, (0, SIDE - 27, 0, SIDE - 20))
    with torch.no_grad():
        assert torch.allclose(tokens.latent, tok.encode_latent(padded), atol=1e-6)
    out = tok.decode(tokens, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 20, 27)


def test_decode_is_reproducible_with_noise_or_generator_and_depends_on_it(tok) -> None:
    tokens = tok.encode(images())
    a = tok.decode(tokens, generator=torch.Generator().manual_seed(5))
    b = tok.decode(tokens, generator=torch.Generator().manual_seed(5))
    noise = flow.draw_noise((2, 3, SIDE, SIDE), torch.Generator().manual_seed(5))
    c = tok.decode(tokens, noise=noise)
    d = tok.decode(tokens, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and torch.equal(a, c)
    assert float((a - d).abs().max()) > 1e-3


def test_one_euler_step_is_noise_plus_velocity_at_t0(tok) -> None:
    tokens = tok.encode(images())
    noise = torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        cond = tok.condition(tokens.latent)
        v = tok.velocity(noise, torch.zeros(2), cond)
    expected = tok.from_model_space(noise + v)
    assert torch.allclose(tok.decode(tokens, noise=noise), expected, atol=1e-5)


def test_velocity_matches_the_per_patch_flow_head(tok) -> None:
    """The image-layout velocity is the flow head applied to each patch row (upstream's B*N rows)."""
    x = torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([0.3, 0.7])
    with torch.no_grad():
        cond = tok.condition(tok.encode(images()).latent)
        ours = tok.velocity(x, t, cond)
        rows = image_to_patches(x, PATCH).reshape(-1, 3 * PATCH * PATCH)
        per_row = tok.flow_head(rows[:, None], t.repeat_interleave(GRID * GRID), cond.reshape(-1, 1, cond.shape[-1]))
    assert torch.allclose(image_to_patches(ours, PATCH).reshape(-1, 3 * PATCH * PATCH), per_row[:, 0], atol=1e-5)


def test_sampler_options_change_the_result_and_match_the_shared_sampler(tok) -> None:
    tokens = tok.encode(images())
    noise = torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(4))
    one = tok.decode(tokens, noise=noise)
    four = tok.decode(tokens, noise=noise, steps=4, schedule="pow_0.5", solver="heun")
    assert float((one - four).abs().max()) > 1e-3
    with torch.no_grad():
        cond = tok.condition(tokens.latent)
        ref = flow.sample(lambda x, t: tok.velocity(x, t, cond), noise, 4, schedule="pow_0.5", solver="heun")
    assert torch.allclose(four, tok.from_model_space(ref), atol=1e-5)
    guided = tok.decode(tokens, noise=noise, steps=2, cfg_scale=3.0)
    with torch.no_grad():
        ref = flow.sample(lambda x, t: tok.velocity(x, t, cond), noise, 2, cfg_scale=3.0,
                          uncond_fn=lambda x, t: tok.velocity(x, t, torch.zeros_like(cond)))
    assert torch.allclose(guided, tok.from_model_space(ref), atol=1e-5)
    via_diffusers = tok.decode(tokens, noise=noise, steps=3, scheduler="FlowMatchEulerDiscreteScheduler")
    assert via_diffusers.shape == one.shape and bool(torch.isfinite(via_diffusers).all())


def test_external_velocity_step_is_used(tok) -> None:
    tokens = tok.encode(images(1))
    calls = []

    def step(x, t, cond):
        calls.append(float(t[0]))
        return tok.velocity(x, t, cond)

    noise = torch.randn(1, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(8))
    out = tok.decode(tokens, noise=noise, steps=3, velocity_fn=step)
    assert calls == pytest.approx([0.0, 1 / 3, 2 / 3])
    assert torch.allclose(out, tok.decode(tokens, noise=noise, steps=3), atol=1e-6)


def test_a_batch_decodes_like_its_items_alone(tok) -> None:
    x = images(3, seed=9)
    tokens = tok.encode(x)
    noise = torch.randn(3, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(9))
    batch = tok.decode(tokens, noise=noise, steps=2)
    for i in range(3):
        alone_tokens = tok.encode(x[i : i + 1])
        assert torch.allclose(alone_tokens.latent, tokens.latent[i : i + 1], atol=1e-5)
        alone = tok.decode(alone_tokens, noise=noise[i : i + 1], steps=2)
        assert torch.allclose(alone, batch[i : i + 1], atol=1e-5)


def test_patch_layout_round_trip_and_upstream_noise(tok) -> None:
    x = torch.randn(2, 3, SIDE, SIDE)
    rows = image_to_patches(x, PATCH)
    assert rows.shape == (2, GRID * GRID, 3 * PATCH * PATCH)
    # row n is patch (n // GRID, n % GRID); column c*p*p + i*p + j is channel c, pixel (i, j)
    n, c, i, j = 6, 2, 3, 5
    assert rows[1, n, c * PATCH * PATCH + i * PATCH + j] == x[1, c, (n // GRID) * PATCH + i, (n % GRID) * PATCH + j]
    assert torch.equal(patches_to_image(rows, (GRID, GRID), PATCH), x)
    upstream = rows.reshape(-1, rows.shape[-1]).numpy()  # upstream draws (B*N, C*p*p)
    assert torch.equal(tok.noise_from_upstream(upstream), x)
    assert torch.equal(tok.noise_from_upstream(rows), x)


def test_upstream_latent_layout_round_trip(tok) -> None:
    tokens = tok.encode(images())
    up = tok.tokens_to_upstream(tokens)
    assert up.shape == (2, GRID * GRID, LATENT)
    back = tok.tokens_from_upstream(up.numpy(), original_size=[[32, 32], [32, 32]])
    assert torch.equal(back.latent, tokens.latent) and back.grid == tokens.grid
    assert torch.equal(tok.embed(tokens), tokens.latent)


def test_tokens_save_and_load_keep_the_latent(tok, tmp_path) -> None:
    tokens = tok.encode(images(1, 24, 30))
    tokens.save(tmp_path / "t.safetensors")
    loaded = Tokens.load(tmp_path / "t.safetensors")
    noise = torch.randn(1, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))
    assert torch.equal(tok.decode(loaded, noise=noise), tok.decode(tokens, noise=noise))


def test_flow_recipe_runs_the_decode_without_the_tokenizer_loop(tok) -> None:
    """What an ONNX runtime does: loop the velocity step over the recipe's times, then the affine map."""
    tokens = tok.encode(images())
    noise = torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(3))
    recipe = tok.flow_recipe(steps=3)
    assert recipe["solver"] == "euler" and len(recipe["times"]) == 4
    with torch.no_grad():
        cond = tok.condition(tokens.latent)
        x = noise.double()
        for t0, t1 in zip(recipe["times"], recipe["times"][1:], strict=False):
            x = x + (t1 - t0) * tok.velocity(x.float(), torch.full((2,), t0), cond).double()
    scale = torch.tensor(recipe["output_scale"]).reshape(1, 3, 1, 1)
    shift = torch.tensor(recipe["output_shift"]).reshape(1, 3, 1, 1)
    assert torch.allclose((x * scale + shift).float(), tok.decode(tokens, noise=noise, steps=3), atol=1e-5)


def test_training_forward_gives_a_finite_loss_with_gradients(tok) -> None:
    train = create_tokenizer("uniflow-tiny")
    out = train(images())
    assert out["loss"].dim() == 0 and bool(torch.isfinite(out["loss"]))
    out["loss"].backward()
    assert train.encoder.blocks[0].attn.qkv.weight.grad is not None
    assert train.flow_head.final.linear.weight.grad is not None


def test_save_and_load_pretrained_round_trip(tok, tmp_path) -> None:
    tok.save_pretrained(tmp_path / "ckpt")
    loaded = registry.from_pretrained(str(tmp_path / "ckpt"))
    x = images(1)
    noise = torch.randn(1, 3, SIDE, SIDE)
    assert torch.equal(loaded.decode(loaded.encode(x), noise=noise), tok.decode(tok.encode(x), noise=noise))


# -- converter -------------------------------------------------------------------------------------


TINY_UPSTREAM = {
    "hidden_act": "gelu", "hidden_size": 32, "image_size": SIDE, "intermediate_size": 64, "layer_norm_eps": 1e-6,
    "model_type": "uniflow", "norm_type": "layer_norm", "num_attention_heads": 2, "num_channels": 3,
    "num_hidden_layers": 2, "patch_size": PATCH, "qk_normalization": False, "qkv_bias": True,
    "torch_dtype": "bfloat16", "use_flash_attn": True, "vit_hidden_size": 32, "llm_hidden_size": 64,
    "use_chal_proj": True, "latent_ch": LATENT, "use_global_blocks": True, "global_blocks_depth": 1,
    "use_cfg": False, "use_disp_loss": False, "decoder_type": "mlp", "num_decoder_layers": 2,
    "num_sampling_steps": "1",
}


def tiny_upstream_state(tok: UniFlowTokenizer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in upstream_state_dict(tok).items()}


def test_upstream_key_names_are_upstreams(tok) -> None:
    keys = set(upstream_state_dict(tok))
    for name in ("embeddings.class_embedding", "embeddings.position_embedding", "embeddings.patch_embedding.weight",
                 "encoder.layers.1.ls2", "encoder.layers.0.attn.qkv.bias", "chal_proj.c_proj.weight",
                 "chal_unproj.c_fc.weight", "global_block_pos_embed", "global_blocks.0.mlp.fc2.bias",
                 "decoder_pos_embed", "flow_head.net.time_embed.mlp.2.weight",
                 "flow_head.net.res_blocks.1.adaLN_modulation.1.weight", "flow_head.net.res_blocks.0.in_ln.bias",
                 "flow_head.net.final_layer.linear.weight"):
        assert name in keys, name


def test_converter_casts_bfloat16_and_reproduces_the_model(tok) -> None:
    state = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in tiny_upstream_state(tok).items()}
    converted = registry.convert("uniflow", state, TINY_UPSTREAM)
    assert converted.dtype == torch.float32 and converted.config.head_layers == 2
    for name, value in converted.state_dict().items():
        assert torch.equal(value, tok.state_dict()[name].to(torch.bfloat16).float()), name
    assert torch.equal(converted.pixel_std.flatten(), torch.tensor([0.229, 0.224, 0.225]))


def test_converter_reads_sizes_from_weights_without_a_config(tok) -> None:
    converted = registry.convert("uniflow", {"state_dict": tiny_upstream_state(tok)}, None, num_heads=2,
                                 global_heads=2)
    x = images(1)
    noise = torch.randn(1, 3, SIDE, SIDE)
    assert torch.allclose(converted.decode(converted.encode(x), noise=noise), tok.decode(tok.encode(x), noise=noise),
                          atol=1e-6)


def test_converter_refuses_unmapped_missing_and_mismatched_weights(tok) -> None:
    state = tiny_upstream_state(tok)
    state["teacher.blocks.0.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match="teacher.blocks.0.weight"):
        registry.convert("uniflow", dict(state), TINY_UPSTREAM)
    assert registry.convert("uniflow", dict(state), TINY_UPSTREAM, drop_prefixes=("teacher.",)) is not None
    del state["teacher.blocks.0.weight"]
    missing = dict(state)
    del missing["flow_head.net.final_layer.linear.bias"]
    with pytest.raises(CheckpointError, match="missing"):
        registry.convert("uniflow", missing, TINY_UPSTREAM)
    with pytest.raises(CheckpointError, match="latent_channels: config 16 vs weights 8"):
        registry.convert("uniflow", dict(state), {**TINY_UPSTREAM, "latent_ch": 16})
    with pytest.raises(CheckpointError, match="not a UniFlow state dict"):
        registry.convert("uniflow", {"encoder.weight": torch.zeros(1)}, None)


def test_upstream_config_mapping_and_refusals() -> None:
    import json
    from pathlib import Path

    from omegaconf import OmegaConf

    published = OmegaConf.to_container(
        OmegaConf.load(Path(__file__).resolve().parent.parent / "configs" / "uniflow-internvit300m-448.yaml")
    )
    mapped = config_from_upstream(published["upstream"]["config"])
    for key in ("image_size", "patch_size", "hidden_size", "num_heads", "num_layers", "latent_channels",
                "global_blocks", "head_layers", "sampling_steps"):
        assert mapped[key] == published["model"][key], key
    assert json.dumps(mapped)  # plain values only
    with pytest.raises(ConfigError, match="qk_normalization"):
        config_from_upstream({**TINY_UPSTREAM, "qk_normalization": True})
    with pytest.raises(ConfigError, match="unknown key"):
        config_from_upstream({**TINY_UPSTREAM, "use_rope": True})
    with pytest.raises(ConfigError, match="vit_hidden_size"):
        config_from_upstream({**TINY_UPSTREAM, "vit_hidden_size": 64})


# -- bad input -------------------------------------------------------------------------------------


def test_bad_images_are_refused_with_the_fix(tok) -> None:
    with pytest.raises(InputError, match="at most 32x32"):
        tok.encode(images(1, 40, 32))
    with pytest.raises(InputError, match="channels"):
        tok.encode(torch.zeros(1, 1, 32, 32))
    with pytest.raises(InputError, match="NaN"):
        tok.encode(torch.full((1, 3, 32, 32), float("nan")))
    with pytest.raises(InputError, match="floating point"):
        tok.encode(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(InputError, match="takes no options"):
        tok.encode(images(1), size=32)
    with pytest.raises(InputError, match="only size"):
        tok.encode_latent(images(1, 24, 24))


def test_bad_tokens_and_noise_are_refused_with_the_fix(tok) -> None:
    tokens = tok.encode(images(1))
    with pytest.raises(InputError, match="no latent"):
        tok.decode(Tokens(ids=torch.zeros(1, 4, 4, dtype=torch.long), modality="image"))
    with pytest.raises(InputError, match=r"\(B, 4, 4, 8\)"):
        tok.decode(torch.zeros(1, 16, 8))
    with pytest.raises(InputError, match="floating point"):
        tok.decode(torch.zeros(1, 4, 4, 8, dtype=torch.long))
    with pytest.raises(InputError, match="NaN"):
        tok.decode(torch.full((1, 4, 4, 8), float("inf")))
    with pytest.raises(InputError, match="noise_from_upstream"):
        tok.decode(tokens, noise=torch.zeros(1, 16, 192))
    with pytest.raises(InputError, match="NaN"):
        tok.decode(tokens, noise=torch.full((1, 3, 32, 32), float("nan")))
    with pytest.raises(InputError, match="velocity_fn"):
        tok.decode(tokens, temperature=0.5)
    with pytest.raises(InputError, match="positive integer"):
        tok.decode(tokens, steps=0)
    with pytest.raises(ConfigError, match="solver"):
        tok.decode(tokens, solver="rk45")
    with pytest.raises(InputError, match=r"\(B\*16, 192\)"):
        tok.noise_from_upstream(np.zeros((5, 192), dtype=np.float32))
    with pytest.raises(InputError, match=r"\(B, 16, 8\)"):
        tok.tokens_from_upstream(torch.zeros(1, 9, 8))


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        create_tokenizer("uniflow-tiny", image_size=30)
    with pytest.raises(ConfigError, match="schedule"):
        create_tokenizer("uniflow-tiny", schedule="exp")
    with pytest.raises(ConfigError, match="solver"):
        create_tokenizer("uniflow-tiny", solver="rk45")
