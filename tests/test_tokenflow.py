"""TokenFlow on the tiny variant: token layout, scale schedules, batching, bad input, converter naming."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import zoo
from registry import ConfigError, InputError, convert, create_tokenizer, variant_info
from registry.hub import load_local
from zoo.tokenflow import TokenFlowTokenizer, map_upstream_state

TINY = "tokenflow-tiny"


@pytest.fixture(scope="module")
def tok() -> TokenFlowTokenizer:
    torch.manual_seed(0)
    return create_tokenizer(TINY).eval()


def images(batch: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=gen) * 2 - 1


def test_registered_variants() -> None:
    names = zoo.list_tokenizers("tokenflow*")
    assert {"tokenflow-clipb-32k-enhanced", "tokenflow-siglip-32k", TINY} <= set(names)


def test_published_variant_specs() -> None:
    with torch.device("meta"):  # full size without allocating the weights
        clip = create_tokenizer("tokenflow-clipb-32k-enhanced")
        siglip = create_tokenizer("tokenflow-siglip-32k")
    assert clip.spec.tokens_per_item == 817 and clip.spec.input_size == (256, 256)
    assert siglip.spec.tokens_per_item == 2227 and siglip.spec.input_size == (384, 384)
    # the fixture's element count, less the usage buffer, plus the semantic decoder's (zero) key biases
    assert sum(p.numel() for p in clip.parameters()) == 376_700_715 - 131_072 + 3 * 768
    for name in ("tokenflow-clipb-32k-enhanced", "tokenflow-siglip-32k"):
        upstream = variant_info(name).upstream
        assert len(upstream["sha256"]) == 64 and len(upstream["revision"]) == 40


def test_encode_layout_and_decode(tok: TokenFlowTokenizer) -> None:
    x = images(2)
    with torch.no_grad():
        tokens = tok.encode(x)
        assert tokens.ids.shape == (2, 21) and tokens.ids.dtype == torch.int64
        assert tokens.meta["scales"] == [1, 2, 4] and tokens.grid == (21,)
        assert torch.equal(tok.tokens_to_upstream(tokens), tokens.ids)
        image = tok.decode(tokens)
        assert image.shape == x.shape and torch.isfinite(image).all()
        features = tok.semantic_features(tokens)
        assert features.shape == (2, 16, tok.config.semantic_out_dim)
        assert torch.equal(tok.decode(tok.tokens_from_upstream(tokens.ids.numpy())), image)


def test_scale_grids_round_trip(tok: TokenFlowTokenizer) -> None:
    with torch.no_grad():
        ids = tok.encode(images(2)).ids
    grids = tok.scale_grids(ids)
    assert [tuple(g.shape) for g in grids] == [(2, 1, 1), (2, 2, 2), (2, 4, 4)]
    assert torch.equal(grids[2].reshape(2, -1), ids[:, 5:])
    assert torch.equal(tok.merge_scales(grids), ids)


def test_decoding_a_prefix_of_the_scales_is_the_sum_of_fewer_codes(tok: TokenFlowTokenizer) -> None:
    with torch.no_grad():
        ids = tok.encode(images(1)).ids
        coarse = tok.quantized(ids[:, :5])
        full = tok.quantized(ids)
        fine_only = tok.quantizer.decode(ids)[..., :] - coarse
        assert tok.decode(ids[:, :5]).shape == (1, 3, 64, 64)
    last = tok.embed(ids[:, 5:], part="both").reshape(1, 4, 4, -1)
    assert torch.allclose(fine_only, last, atol=1e-5)  # the last scale is already 4x4: no resampling
    assert not torch.allclose(coarse, full)


def test_embed_returns_unit_code_vectors(tok: TokenFlowTokenizer) -> None:
    ids = torch.tensor([[0, 5, 511]])
    semantic = tok.embed(ids)
    pixel = tok.embed(ids, part="pixel")
    assert semantic.shape == (1, 3, tok.config.semantic_code_dim)
    assert pixel.shape == (1, 3, tok.config.pixel_code_dim)
    assert torch.allclose(semantic.norm(dim=-1), torch.ones(1, 3), atol=1e-5)
    assert torch.allclose(pixel.norm(dim=-1), torch.ones(1, 3), atol=1e-5)
    with pytest.raises(InputError, match="part must be"):
        tok.embed(ids, part="texture")


def test_batch_gives_the_same_ids_as_one_by_one(tok: TokenFlowTokenizer) -> None:
    x = images(3, seed=1)
    with torch.no_grad():
        together = tok.encode(x).ids
        alone = torch.cat([tok.encode(x[i : i + 1]).ids for i in range(3)])
        assert torch.equal(together, alone)
        decoded = tok.decode(together)
        assert torch.allclose(decoded[1:2], tok.decode(together[1:2]), atol=1e-4)  # float rounding only


def test_ids_reproduce_the_nearest_dual_code_search(tok: TokenFlowTokenizer) -> None:
    """The first scale's id is the argmin of the summed semantic and pixel distances to the mean latent."""
    x = images(2, seed=2)
    with torch.no_grad():
        latent = tok.latent(x)
        ids = tok.encode_ids(x)
        mean = latent.mean(dim=(2, 3))
        d = tok.config.semantic_code_dim
        sem = torch.nn.functional.normalize(mean[:, :d], dim=-1)
        pix = torch.nn.functional.normalize(mean[:, d:], dim=-1)
        codes_sem, codes_pix = tok.quantizer.quantizer.decode_pair(torch.arange(tok.config.codebook_size))
        dist = torch.cdist(sem.double(), codes_sem.double()) ** 2 + torch.cdist(pix.double(), codes_pix.double()) ** 2
    assert torch.equal(ids[:, 0], dist.argmin(dim=1))


def test_wrong_resolution_is_refused_or_resized(tok: TokenFlowTokenizer) -> None:
    x = images(1, size=80)
    with pytest.raises(InputError, match=r"64x64.*80x80.*resize=True"):
        tok.encode(x)
    with torch.no_grad():
        tokens = tok.encode(x, resize=True)
        assert tokens.ids.shape == (1, 21)
        assert tokens.original_size.tolist() == [[80, 80]]
        assert tok.decode(tokens).shape == (1, 3, 80, 80)
        assert tok.decode(tokens, restore_size=False).shape == (1, 3, 64, 64)


def test_wrong_number_of_ids_names_the_valid_counts(tok: TokenFlowTokenizer) -> None:
    with pytest.raises(InputError, match=r"1, 5, 21"):
        tok.decode(torch.zeros(1, 20, dtype=torch.long))
    with pytest.raises(InputError, match=r"flat \(B, L\)"):
        tok.decode(torch.zeros(1, 4, 4, dtype=torch.long))


def test_out_of_range_and_non_integer_ids_are_refused(tok: TokenFlowTokenizer) -> None:
    ids = torch.zeros(1, 21, dtype=torch.long)
    ids[0, 3] = 512
    with pytest.raises(InputError, match=r"\[0, 511\]"):
        tok.decode(ids)
    with pytest.raises(InputError, match="integer"):
        tok.decode(torch.zeros(1, 21))
    with pytest.raises(InputError):
        tok.embed(torch.tensor([-1]))


def test_bad_images_are_refused(tok: TokenFlowTokenizer) -> None:
    with pytest.raises(InputError, match="channels"):
        tok.encode(torch.zeros(1, 1, 64, 64))
    with pytest.raises(InputError, match="NaN"):
        tok.encode(torch.full((1, 3, 64, 64), float("nan")))
    with pytest.raises(InputError, match="unknown encode option"):
        tok.encode(images(1), scales=[4])


def test_scale_schedule_is_a_config_choice() -> None:
    single = create_tokenizer(TINY, scales=[4]).eval()
    assert single.spec.tokens_per_item == 16
    with torch.no_grad():
        tokens = single.encode(images(1))
        assert tokens.ids.shape == (1, 16) and tokens.meta["scales"] == [4]
        assert single.decode(tokens).shape == (1, 3, 64, 64)
    with pytest.raises(ConfigError, match="last scale must equal the latent grid"):
        create_tokenizer(TINY, scales=[1, 2, 3])
    with pytest.raises(ConfigError, match="increasing"):
        create_tokenizer(TINY, scales=[2, 1, 4])
    with pytest.raises(ConfigError, match="teacher"):
        create_tokenizer(TINY, teacher="dino")


def test_training_forward_gives_losses_and_gradients() -> None:
    torch.manual_seed(0)
    model = create_tokenizer(TINY).train()
    x = images(2)
    target = torch.randn(2, 16, model.config.semantic_out_dim)
    out = model(x, teacher_target=target)
    assert set(out["losses"]) >= {"reconstruction", "semantic", "commitment"}
    total = sum(out["losses"].values())
    total.backward()
    assert model.teacher.blocks[0].attn.qkv.weight.grad is not None
    assert model.pixel_encoder.conv_in.weight.grad is not None
    assert out["ids"].shape == (2, 21)


def test_save_and_load_round_trip(tok: TokenFlowTokenizer, tmp_path) -> None:
    tok.save_pretrained(tmp_path / "ckpt")
    again = load_local(tmp_path / "ckpt")
    x = images(1, seed=3)
    with torch.no_grad():
        assert torch.equal(again.encode_ids(x), tok.encode_ids(x))


# -- converter naming (fast; the heavy parity test checks the full-size numbers) ------------------------


def upstream_names(state: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """Our tiny CLIP-teacher state dict under upstream's key names (the inverse of the converter)."""
    out: dict[str, torch.Tensor] = {"quantize.codebook_used": torch.zeros(131072)}
    renames = [
        ("teacher.patch_embed.proj.", "encoder_vqkd.conv1."), ("teacher.norm_pre.", "encoder_vqkd.ln_pre."),
        ("teacher.norm.", "encoder_vqkd.ln_post."), ("semantic_decoder.norm.", "decoder_vqkd.fc_norm."),
        ("semantic_decoder.", "decoder_vqkd."), ("pixel_encoder.", "encoder."), ("pixel_decoder.", "decoder."),
        ("to_pixel_code.", "quant_conv."), ("from_pixel_code.", "post_quant_conv."),
        ("to_semantic_code.", "encode_task_layer."), ("to_teacher_features.", "decode_task_layer."),
        ("quantizer.quantizer.codebook_a", "quantize.embedding_vqkd.weight"),
        ("quantizer.quantizer.codebook_b", "quantize.embedding_vqgan.weight"),
    ]
    blocks = [("attn.qkv.weight", "attn.in_proj_weight"), ("attn.qkv.bias", "attn.in_proj_bias"),
              ("attn.proj.", "attn.out_proj."), ("norm1.", "ln_1."), ("norm2.", "ln_2."), ("mlp.fc1.", "mlp.c_fc."),
              ("mlp.fc2.", "mlp.c_proj.")]
    for key, value in state.items():
        if key == "teacher.cls_token":
            out["encoder_vqkd.class_embedding"] = value.reshape(-1)
        elif key == "teacher.pos_embed":
            out["encoder_vqkd.positional_embedding"] = value[0]
        elif key.startswith("teacher.blocks."):
            index, leaf = key[len("teacher.blocks."):].split(".", 1)
            new = next(n + leaf[len(o):] for o, n in blocks if leaf.startswith(o))
            out[f"encoder_vqkd.transformer.resblocks.{index}.{new}"] = value
        elif key.startswith("semantic_decoder.blocks.") and key.endswith("attn.qkv.bias"):
            base = "decoder_vqkd." + key[len("semantic_decoder."):-len("qkv.bias")]
            q, _, v = value.chunk(3)
            out[base + "q_bias"], out[base + "v_bias"] = q, v
        else:
            old, new = next((o, n) for o, n in renames if key.startswith(o))
            out[new + key[len(old):]] = value
    return out


def test_converter_maps_upstream_names(tok: TokenFlowTokenizer) -> None:
    upstream = upstream_names(tok.state_dict(), tok.config.teacher_depth)
    config = {"ModelArgs": {"teacher": "clipb_224", "infer_interpolate": True, "codebook_size": 512}}
    overrides = dataclasses.asdict(tok.config)
    converted = convert("tokenflow", {"model": upstream}, config, **overrides)
    assert not converted.training
    x = images(2, seed=4)
    with torch.no_grad():
        ids = converted.encode_ids(x)
        assert torch.equal(ids, tok.encode_ids(x))
        assert torch.allclose(converted.decode_semantic_ids(ids), tok.decode_semantic_ids(ids), atol=1e-5)


def test_converter_refuses_foreign_keys(tok: TokenFlowTokenizer) -> None:
    upstream = upstream_names(tok.state_dict(), tok.config.teacher_depth)
    upstream["discriminator.conv.weight"] = torch.zeros(1)
    config = {"ModelArgs": {"teacher": "clipb_224", "infer_interpolate": True}}
    with pytest.raises(zoo.CheckpointError, match="discriminator.conv.weight"):
        convert("tokenflow", upstream, config, **dataclasses.asdict(tok.config))
    with pytest.raises(ConfigError, match="vitamin_xlarge_256"):
        convert("tokenflow", upstream, {"teacher": "vitamin_xlarge_256"})


def test_siglip_teacher_matches_transformers() -> None:
    """Our timm SigLIP teacher, converted from HF SiglipVisionModel keys, equals upstream's hidden_states[-2]."""
    transformers = pytest.importorskip("transformers", reason="transformers is not installed (optional check)")
    torch.manual_seed(0)
    hf_config = transformers.SiglipVisionConfig(
        hidden_size=48, intermediate_size=int(48 * 3.7362), num_hidden_layers=3, num_attention_heads=4,
        image_size=56, patch_size=14, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh",
    )
    hf = transformers.SiglipVisionModel(hf_config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ours = create_tokenizer(
        TINY, teacher="siglip", teacher_arch="vit_so400m_patch14_siglip_384", image_size=56, teacher_pos_size=56,
        teacher_patch_size=14, teacher_width=48, teacher_depth=2, teacher_heads=4, teacher_mlp_ratio=3.7362,
    ).eval()
    state = {k if k.startswith("vision_model.") else "vision_model." + k: v for k, v in hf.state_dict().items()}
    mapped = map_upstream_state({"encoder_vqkd." + k: v for k, v in state.items()}, ours.config)
    ours.teacher.load_state_dict({k[len("teacher."):]: v for k, v in mapped.items()}, strict=True)
    x = images(2, size=56, seed=5) * 1.2  # beyond [-1, 1]: upstream's scaling layer clamps
    with torch.no_grad():
        scaled = (((x + 1) * 127.5).clamp(0, 255) / 255 - 0.5) / 0.5
        reference = hf(pixel_values=scaled, output_hidden_states=True).hidden_states[-2]
        assert torch.allclose(ours.teacher_features(x), reference, atol=1e-5)
        tokens = ours.encode(x.clamp(-1, 1))
        assert ours.decode(tokens).shape == (2, 3, 56, 56)  # the pixel branch runs at 64 and is resized back


def test_training_checkpoint_file_reads_safely_and_converts(tok: TokenFlowTokenizer, tmp_path) -> None:
    """A file laid out as upstream's vq_train.py writes it (weights plus argparse options) converts, and
    upstream's container order (ema, then model, then state_dict) picks the weights."""
    import argparse

    from registry.checkpoint import read_checkpoint

    upstream = upstream_names(tok.state_dict(), tok.config.teacher_depth)
    decoy = {k: torch.zeros_like(v) for k, v in upstream.items()}
    path = tmp_path / "tokenflow.pt"
    torch.save({"model": decoy, "ema": upstream, "steps": 7, "args": argparse.Namespace(teacher="clipb_224")}, path)
    loaded = read_checkpoint(path)
    config = {"ModelArgs": {"teacher": "clipb_224", "infer_interpolate": True}}
    converted = convert("tokenflow", loaded, config, **dataclasses.asdict(tok.config))
    x = images(1, seed=6)
    with torch.no_grad():
        assert torch.equal(converted.encode_ids(x), tok.encode_ids(x))
