"""S3Tokenizer on small models: token counts, batching, long-audio windows, converters, bad input.

`reference_encoder` below is an independent plain-torch re-statement of the upstream encoder (as the
parity fixtures' READMEs describe it: masked convs, q and k each scaled by head_dim^-0.25, -1e10 on
padded keys, rotary and FSMN for v2). It checks our shared-backend model on architectures no fixture
covers (v1 at 25 Hz) and is itself checked against upstream's v1 latent in test_s3tokenizer_parity.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import registry
import zoo
from registry.checkpoint import ONNX_GRAPH_KEY, dig, read_checkpoint
from registry.config import load_variant_config
from registry.errors import CheckpointError, ConfigError, InputError, UnsupportedError
from zoo.s3tokenizer import S3Tokenizer, window_starts

SR = 16000


# -- helpers -----------------------------------------------------------------------------------------
def tiny(version: str = "v2", **overrides: object) -> S3Tokenizer:
    """A small random model of either architecture (v1: VQ + positional table; v2: rotary + FSMN + FSQ)."""
    base: dict[str, object] = {}
    if version.startswith("v1"):
        base = {"positions": "table", "fsmn_kernel": 0, "attn_ln_eps": 1e-5, "quantizer": "vq",
                "codebook_size": 256, "strides": [1, 2] if version == "v1" else [2, 2]}
    base.update(overrides)
    torch.manual_seed(0)
    tok = registry.create_tokenizer("s3tokenizer-tiny", **base).eval()
    if tok.config.positions == "table":  # random table: a re-implementation must read it, not recompute it
        tok.encoder.positional_embedding.normal_(0, 0.5)
    return tok


def speechlike(seconds: float, seed: int = 0, rate: int = SR, noise: float = 0.01) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    n = int(round(seconds * rate))
    t = torch.arange(n, dtype=torch.float64) / rate
    f0 = 120 + 40 * torch.sin(2 * math.pi * 0.7 * t)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / rate
    voice = sum(torch.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * torch.sin(2 * math.pi * 3.5 * t)
    x = 0.3 * envelope * voice + noise * torch.randn(n, generator=gen, dtype=torch.float64)
    return x.float()


def upstream_state(tok: S3Tokenizer) -> dict[str, torch.Tensor]:
    """Our state dict under upstream's key names (what s3tokenizer's onnx2torch / init_from_pt use)."""
    out = {}
    for key, value in tok.state_dict().items():
        if key == "quantizer.codebook":
            key = "quantizer._codebook.embed"
        elif key.startswith("project_down."):
            key = "quantizer._codebook." + key
        out[key] = value.clone()
    return out


def upstream_config(tok: S3Tokenizer, name: str) -> dict[str, object]:
    cfg = tok.config
    return {"name": name, "n_mels": cfg.n_mels, "n_audio_ctx": cfg.max_positions, "n_audio_state": cfg.dim,
            "n_audio_head": cfg.heads, "n_audio_layer": cfg.layers, "n_codebook_size": cfg.codebook_size,
            "use_sdpa": False}


def reference_encoder(
    state: dict[str, torch.Tensor], mel: torch.Tensor, lengths: torch.Tensor, heads: int, strides: tuple[int, int],
    v2: bool, dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Upstream's encoder, restated from its documented facts with explicit masks (see module doc)."""
    p = {k[len("encoder."):]: v.to(dtype) for k, v in state.items() if k.startswith("encoder.")}
    x = mel.to(dtype)

    def keep(length: torch.Tensor, size: int) -> torch.Tensor:
        return (torch.arange(size)[None, :] < length[:, None]).to(dtype)

    x = F.gelu(F.conv1d(x * keep(lengths, x.shape[-1])[:, None], p["conv1.weight"], p["conv1.bias"],
                        stride=strides[0], padding=1))
    lengths = (lengths - 1) // strides[0] + 1
    x = F.gelu(F.conv1d(x * keep(lengths, x.shape[-1])[:, None], p["conv2.weight"], p["conv2.bias"],
                        stride=strides[1], padding=1))
    lengths = (lengths - 1) // strides[1] + 1
    x = x.transpose(1, 2)
    batch, steps, dim = x.shape
    hd = dim // heads
    valid = keep(lengths, steps)[:, :, None]
    bias = (1.0 - keep(lengths, steps))[:, None, None, :] * -1e10
    if not v2:
        x = x + p["positional_embedding"][:steps]
    else:
        inv = 1.0 / 10000.0 ** (torch.arange(0, hd, 2, dtype=dtype) / hd)
        angle = torch.arange(steps, dtype=dtype)[:, None] * inv[None, :]
        cos, sin = torch.cat([angle.cos()] * 2, -1), torch.cat([angle.sin()] * 2, -1)

    def rope(t: torch.Tensor) -> torch.Tensor:  # t (B, L, H, hd), half-rotation layout
        rotated = torch.cat([-t[..., hd // 2:], t[..., : hd // 2]], -1)
        return t * cos[None, :, None] + rotated * sin[None, :, None]

    for i in range(sum(1 for k in p if k.endswith("attn.query.weight"))):
        b = f"blocks.{i}."
        h = F.layer_norm(x, (dim,), p[b + "attn_ln.weight"], p[b + "attn_ln.bias"], 1e-6 if v2 else 1e-5)
        q = F.linear(h, p[b + "attn.query.weight"], p[b + "attn.query.bias"]).view(batch, steps, heads, hd)
        k = F.linear(h, p[b + "attn.key.weight"]).view(batch, steps, heads, hd)
        v = F.linear(h, p[b + "attn.value.weight"], p[b + "attn.value.bias"])
        if v2:
            q, k = rope(q), rope(k)
        q, k = q.transpose(1, 2) * hd**-0.25, k.transpose(1, 2) * hd**-0.25
        w = torch.softmax(q @ k.transpose(-1, -2) + bias, -1)
        out = (w @ v.view(batch, steps, heads, hd).transpose(1, 2)).transpose(1, 2).reshape(batch, steps, dim)
        out = F.linear(out, p[b + "attn.out.weight"], p[b + "attn.out.bias"])
        if v2:
            m = v * valid
            kernel = p[b + "attn.fsmn_block.weight"]
            pad = (kernel.shape[-1] - 1) // 2
            conv = F.conv1d(F.pad(m.transpose(1, 2), (pad, kernel.shape[-1] - 1 - pad)), kernel, groups=dim)
            out = out + (conv.transpose(1, 2) + m) * valid
        x = x + out
        h = F.layer_norm(x, (dim,), p[b + "mlp_ln.weight"], p[b + "mlp_ln.bias"], 1e-5)
        x = x + F.linear(F.gelu(F.linear(h, p[b + "mlp.0.weight"], p[b + "mlp.0.bias"])), p[b + "mlp.2.weight"],
                         p[b + "mlp.2.bias"])
    return x


# -- the spec and token counts -------------------------------------------------------------------
def test_registered_variants_and_spec() -> None:
    names = zoo.list_tokenizers("s3tokenizer-*")
    assert set(names) == {"s3tokenizer-v1-50hz", "s3tokenizer-v1-25hz", "s3tokenizer-v2-25hz", "s3tokenizer-tiny"}
    expect = {"s3tokenizer-v1-50hz": (50.0, 4096, "vq"), "s3tokenizer-v1-25hz": (25.0, 4096, "vq"),
              "s3tokenizer-v2-25hz": (25.0, 6561, "fsq")}
    for name, (rate, size, quantizer) in expect.items():
        cfg = load_variant_config(name)
        assert cfg.model.quantizer == quantizer
        assert cfg.upstream.sha256 and cfg.upstream.container == ["@graph"]
        downsample = cfg.model.strides[0] * cfg.model.strides[1]
        assert SR / (cfg.model.hop_length * downsample) == rate
        assert cfg.model.codebook_size == size
    spec = tiny().spec
    assert spec.modality == "audio" and spec.kind == "discrete" and not spec.can_decode
    assert spec.token_rate == 25.0 and spec.codebook_sizes == (6561,) and spec.sample_rate == SR
    assert spec.export["encoder"] is None and "encoder-only" in spec.export["decoder"]


@pytest.mark.parametrize("version", ["v1", "v1_25", "v2"])
def test_token_count_is_what_the_frame_rate_implies(version: str) -> None:
    tok = tiny(version)
    down = 2 if version == "v1" else 4
    for n in (201, 320, 16000, 16161, 23999, 48000 + 17):
        ids = tok.encode(speechlike(n / SR, seed=n)).ids
        assert ids.shape == (1, math.ceil((n // 160) / down)), n
        assert tok.num_tokens(n) == ids.shape[1]


# -- batching ------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_padded_batch_with_lengths_equals_each_clip_alone(version: str) -> None:
    tok = tiny(version)
    clips = [speechlike(3.0, 1), speechlike(1.37, 2), speechlike(2.2, 3)]
    batch = torch.stack([F.pad(c, (0, 48000 - c.shape[0])) for c in clips])[:, None]
    tokens = tok.encode(batch, lengths=[c.shape[0] for c in clips])
    assert tokens.lengths.tolist() == [tok.num_tokens(c.shape[0]) for c in clips]
    for i, clip in enumerate(clips):
        alone = tok.encode(clip)
        n = int(tokens.lengths[i])
        assert torch.equal(tokens.ids[i, :n], alone.ids[0])
        assert torch.equal(tokens.item(i).ids, alone.ids)
        assert bool((tokens.ids[i, n:] == 0).all())
    assert tokens.original_size.tolist() == [c.shape[0] for c in clips]


@pytest.mark.parametrize("version", ["v1_25", "v2"])
def test_encoder_matches_the_reference_restatement(version: str) -> None:
    """Ours (shared attention/rotary/quantizer backends) vs the plain reference, with padding."""
    tok = tiny(version)
    mel, frames = tok.frontend.forward_clips([speechlike(2.0, 4), speechlike(1.1, 5)])
    with torch.no_grad():
        ours, lengths = tok.encoder(mel, frames)
    ref = reference_encoder(upstream_state(tok), mel, frames, tok.config.heads, tuple(tok.config.strides),
                            v2=version == "v2")
    for b in range(2):
        n = int(lengths[b])
        assert (ours[b, :n].double() - ref[b, :n]).abs().max() < 1e-4


# -- long audio ----------------------------------------------------------------------------------
def test_window_plan() -> None:
    assert window_starts(3000, 3000, 2600) == [0]
    assert window_starts(3001, 3000, 2600) == [0, 2600]
    assert window_starts(3500, 3000, 2600) == [0, 2600]  # upstream's windows for 35 s
    assert window_starts(5201, 3000, 2600) == [0, 2600]  # upstream adds a 1-frame third window here
    assert window_starts(5240, 3000, 2600) == [0, 2600, 5200][:2]  # 52.4 s: 2600 + 3000 >= 5240
    assert window_starts(5601, 3000, 2600) == [0, 2600, 5200]


@pytest.mark.parametrize("seconds", [52.4, 78.2])
def test_long_audio_keeps_every_token_and_merges_by_ownership(seconds: float) -> None:
    """52.4 s: upstream returns 1260 tokens (its issue #53); the frame rate implies 1310, and so do we."""
    tok = tiny("v2")
    x = speechlike(seconds, seed=int(seconds))
    tokens = tok.encode(x)
    frames = x.shape[0] // 160
    total = math.ceil(frames / 4)
    assert tokens.ids.shape == (1, total) and int(tokens.lengths[0]) == total
    assert torch.equal(tok.encode_ids(x[None, None]), tokens.ids)
    mel = tok.frontend(x[None])
    starts = window_starts(frames, 3000, 2600)
    with torch.no_grad():
        for k, start in enumerate(starts):
            window = mel[..., start : start + 3000]
            ids = tok.ids_from_mel(window)[0]
            first = 0 if k == 0 else start // 4 + 50
            last = total if k == len(starts) - 1 else starts[k + 1] // 4 + 50
            assert torch.equal(tokens.ids[0, first:last], ids[first - start // 4 : last - start // 4]), (k, first)


def test_long_and_short_clips_in_one_batch() -> None:
    tok = tiny("v2", max_frames_per_pass=6000)  # several encoder passes
    clips = [speechlike(31.0, 7), speechlike(2.0, 8), speechlike(56.0, 9)]
    longest = max(c.shape[0] for c in clips)
    batch = torch.stack([F.pad(c, (0, longest - c.shape[0])) for c in clips])[:, None]
    tokens = tok.encode(batch, lengths=[c.shape[0] for c in clips])
    for i, clip in enumerate(clips):
        alone = tok.encode(clip)
        assert torch.equal(tokens.item(i).ids, alone.ids)


# -- no decoder, embeddings, upstream layouts -----------------------------------------------------
def test_decode_refuses_and_embed_works() -> None:
    for version in ("v1", "v2"):
        tok = tiny(version)
        tokens = tok.encode(speechlike(1.0))
        with pytest.raises(UnsupportedError, match="encoder-only"):
            tok.decode(tokens)
        with pytest.raises(UnsupportedError):
            tok.decoder_module()
        codes = tok.embed(tokens.ids)
        if version == "v2":
            assert codes.shape == (*tokens.ids.shape, 8)
            assert set(codes.unique().tolist()) <= {-1.0, 0.0, 1.0}
            digits = (codes + 1).long()
            assert torch.equal((digits * 3 ** torch.arange(8)).sum(-1), tokens.ids)
        else:
            assert torch.equal(codes, tok.quantizer.codebook[tokens.ids])
        with pytest.raises(InputError):
            tok.embed(torch.tensor([[tok.config.codebook_size]]))


def test_upstream_id_layout_round_trip() -> None:
    tok = tiny("v2")
    tokens = tok.encode(torch.stack([speechlike(1.0, 1), F.pad(speechlike(0.5, 2), (0, 8000))])[:, None],
                        lengths=[16000, 8000])
    upstream = tok.tokens_to_upstream(tokens).int()  # upstream's short path returns int32 (B, T')
    back = tok.tokens_from_upstream(upstream, lengths=tokens.lengths)
    assert torch.equal(back.ids, tokens.ids) and torch.equal(back.lengths, tokens.lengths)
    onnx_layout = tok.tokens_from_upstream(upstream[:1, None].numpy())  # the official ONNX gives (1, 1, T')
    assert torch.equal(onnx_layout.ids, tokens.ids[:1])


# -- bad input -----------------------------------------------------------------------------------
def test_bad_input_is_refused_clearly() -> None:
    tok = tiny("v2")
    with pytest.raises(InputError, match="empty"):
        tok.encode(torch.zeros(1, 1, 0))
    with pytest.raises(InputError, match="NaN"):
        tok.encode(torch.tensor([0.1, float("nan")] * 4000))
    with pytest.raises(InputError, match="needs at least 201"):
        tok.encode(torch.zeros(150))
    with pytest.raises(InputError, match="channels"):
        tok.encode(torch.zeros(1, 2, 16000))
    with pytest.raises(InputError, match="floating point"):
        tok.encode(torch.zeros(16000, dtype=torch.int16))
    with pytest.raises(InputError, match="lengths"):
        tok.encode(torch.zeros(2, 1, 16000), lengths=[16000, 17000])
    with pytest.raises(InputError, match="lengths"):
        tok.encode(torch.zeros(2, 1, 16000), lengths=[16000])
    with pytest.raises(InputError, match="clip 1"):
        tok.encode(torch.randn(2, 1, 16000), lengths=[16000, 100])
    with pytest.raises(InputError, match="sample_rate"):
        tok.encode(torch.zeros(16000), sample_rate=0)
    with pytest.raises(InputError, match="unknown encode option"):
        tok.encode(torch.zeros(16000), rate=16000)


@pytest.mark.parametrize("rate", [8000, 48000])
def test_other_sample_rates_are_resampled(rate: int) -> None:
    tok = tiny("v2")
    x = speechlike(2.5, seed=3, rate=rate, noise=0.0)
    tokens = tok.encode(x, sample_rate=rate)
    n16 = math.ceil(x.shape[0] * SR / rate)
    assert tokens.ids.shape == (1, tok.num_tokens(n16))
    assert tokens.original_size.tolist() == [n16]
    if rate == 48000:  # band-limited 48 kHz -> 16 kHz keeps the content: the features of native 16 kHz audio
        wave, counts = tok._resample(x[None, None], [x.shape[0]], rate)
        native = tok.frontend(speechlike(2.5, seed=3, rate=SR, noise=0.0)[None])
        resampled = tok.frontend(wave[:, 0, : counts[0]])
        assert (resampled - native).abs().median() < 0.02


# -- converters ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("version", "name"), [("v1", "speech_tokenizer_v1"), ("v1_25", "speech_tokenizer_v1_25hz"),
                                               ("v2", "speech_tokenizer_v2_25hz")])
def test_community_state_dict_converts(version: str, name: str) -> None:
    tok = tiny(version)
    converted = registry.convert("s3tokenizer", upstream_state(tok), upstream_config(tok, name))
    assert converted.config.strides == tok.config.strides
    for key, value in tok.state_dict().items():
        assert torch.equal(converted.state_dict()[key], value), key
    x = speechlike(1.5, 6)
    assert torch.equal(converted.encode(x).ids, tok.encode(x).ids)


def test_converter_errors_are_clear() -> None:
    tok = tiny("v1")
    state = upstream_state(tok)
    with pytest.raises(ConfigError, match="50 Hz from 25 Hz"):
        registry.convert("s3tokenizer", dict(state), None)
    with pytest.raises(ConfigError, match="does not match the weights"):
        registry.convert("s3tokenizer", dict(state), upstream_config(tok, "speech_tokenizer_v2_25hz"))
    bad = dict(state)
    bad.pop("encoder.blocks.0.attn.key.weight")
    with pytest.raises(CheckpointError, match="missing keys"):
        registry.convert("s3tokenizer", bad, upstream_config(tok, "speech_tokenizer_v1"))
    with pytest.raises(CheckpointError, match="@graph"):
        registry.convert("s3tokenizer", {"onnx::MatMul_12": torch.zeros(2, 2)}, {"name": "speech_tokenizer_v1"})


def write_official_style_onnx(path: Path, state: dict[str, torch.Tensor], v2: bool) -> None:
    """An ONNX file laid out like the official ones, as far as the weights go (nodes are not runnable).

    Anonymous initializer names, linear weights as (in, out) MatMul operands named by their consuming
    node, the official fixed names for convs / positional table / v2 projection, block 0's LayerNorms as
    LayerNormalization nodes and the others as primitive Mul / Add_1 ops, the codebook used by two
    nodes, plus initializers upstream's converter ignores (unused, or used by other quantizer nodes).
    """
    import onnx
    from onnx import helper, numpy_helper

    inits: list = []
    nodes: list = []
    counter = iter(range(100, 10_000))

    def add(tensor: torch.Tensor, node: str, op: str, name: str | None = None, slot: int = 1) -> str:
        name = name or f"onnx::{op}_{next(counter)}"
        if name not in {i.name for i in inits}:
            inits.append(numpy_helper.from_array(tensor.detach().numpy().copy(), name))
        inputs = ["x"] * 3
        inputs[slot] = name
        nodes.append(helper.make_node(op, inputs[: max(2, slot + 1)], [f"{node}_out"], name=node))
        return name

    conv_names = ("onnx::Conv_2216", "onnx::Conv_2217", "onnx::Conv_2218", "onnx::Conv_2219") if v2 else (
        "onnx::Conv_1519", "onnx::Conv_1520", "onnx::Conv_1521", "onnx::Conv_1522")
    for (key, name) in zip(("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"), conv_names, strict=True):
        add(state[f"encoder.{key}"], f"/{key.split('.')[0]}/Conv", "Conv", name)
    if not v2:
        add(state["encoder.positional_embedding"], "/Add", "Add", "encoders.positional_embedding")
    layers = sum(1 for k in state if k.endswith("attn.query.weight"))
    for i in range(layers):
        b, s = f"/blocks.{i}", f"encoder.blocks.{i}."
        for proj in ("query", "key", "value", "out"):
            add(state[s + f"attn.{proj}.weight"].t(), f"{b}/attn/{proj}/MatMul", "MatMul")
            if proj != "key":
                add(state[s + f"attn.{proj}.bias"], f"{b}/attn/{proj}/Add", "Add", f"blocks.{i}.attn.{proj}.bias", 0)
        for j in ("0", "2"):
            add(state[s + f"mlp.{j}.weight"].t(), f"{b}/mlp/mlp.{j}/MatMul", "MatMul")
            add(state[s + f"mlp.{j}.bias"], f"{b}/mlp/mlp.{j}/Add", "Add")
        if v2:
            add(state[s + "attn.fsmn_block.weight"], f"{b}/attn/fsmn_block/Conv", "Conv")
        for ln in ("attn_ln", "mlp_ln"):
            if i == 0:
                scale = add(state[s + f"{ln}.weight"], f"{b}/{ln}/LayerNormalization", "LayerNormalization")
                shift = f"blocks.{i}.{ln}.bias"
                inits.append(numpy_helper.from_array(state[s + f"{ln}.bias"].numpy().copy(), shift))
                nodes[-1].input.append(shift)
                assert nodes[-1].input[1] == scale
            else:
                add(state[s + f"{ln}.weight"], f"{b}/{ln}/Mul", "Mul")
                add(state[s + f"{ln}.bias"], f"{b}/{ln}/Add_1", "Add")
    if v2:
        add(state["quantizer._codebook.project_down.weight"].t(), "/quantizer/project_down/MatMul", "MatMul",
            "onnx::MatMul_2536")
        add(state["quantizer._codebook.project_down.bias"], "/quantizer/project_down/Add", "Add",
            "quantizer.project_in.bias", 0)
    else:
        book = add(state["quantizer._codebook.embed"].t(), "/quantizer/rq/model/layers.0/_codebook/Pow_1", "Pow")
        reuse = "/quantizer/rq/model/layers.0/_codebook/MatMul"
        nodes.append(helper.make_node("MatMul", ["x", book], ["y"], name=reuse))
    add(torch.tensor(2.0), "/quantizer/Mul", "Mul")  # a scalar constant that upstream drops
    inits.append(numpy_helper.from_array(torch.ones(3).numpy(), "unused_initializer"))
    graph = helper.make_graph(nodes, "s3tokenizer", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph), str(path))


@pytest.mark.parametrize(("version", "name"), [("v1", "speech_tokenizer_v1"), ("v2", "speech_tokenizer_v2_25hz")])
def test_official_style_onnx_converts_by_graph_structure(tmp_path: Path, version: str, name: str) -> None:
    pytest.importorskip("onnx", reason="reading ONNX weights needs the onnx package")
    tok = tiny(version)
    path = tmp_path / "speech_tokenizer.onnx"
    write_official_style_onnx(path, upstream_state(tok), v2=version == "v2")
    loaded = read_checkpoint(path)
    assert isinstance(loaded[ONNX_GRAPH_KEY], dict)
    converted = registry.convert("s3tokenizer", dig(loaded, [ONNX_GRAPH_KEY]), upstream_config(tok, name))
    for key, value in tok.state_dict().items():
        assert torch.equal(converted.state_dict()[key], value), key
    via_files = registry.convert_files("s3tokenizer", [path], upstream_config(tok, name), container=[ONNX_GRAPH_KEY])
    assert torch.equal(via_files.encode(speechlike(1.0)).ids, tok.encode(speechlike(1.0)).ids)
    with pytest.raises(CheckpointError, match="@graph"):  # the initializer names alone cannot be mapped
        registry.convert("s3tokenizer", dig(loaded, None), upstream_config(tok, name))


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    tok = tiny("v1")
    tok.save_pretrained(tmp_path / "ckpt")
    loaded = zoo.from_pretrained(str(tmp_path / "ckpt"))
    assert isinstance(loaded, S3Tokenizer) and loaded.config == tok.config
    x = speechlike(1.2, 11)
    tokens = tok.encode(x)
    assert torch.equal(loaded.encode(x).ids, tokens.ids)
    tokens.save(tmp_path / "tokens.safetensors")
    again = zoo.Tokens.load(tmp_path / "tokens.safetensors")
    assert torch.equal(again.ids, tokens.ids) and torch.equal(again.lengths, tokens.lengths)


def test_training_forward_gives_quantizer_losses() -> None:
    tok = tiny("v1").train()
    x = torch.stack([speechlike(1.0, 1), speechlike(1.0, 2)])[:, None]
    out = tok(x, lengths=torch.tensor([16000, 12000]))
    assert out["ids"].shape == (2, 50) and out["lengths"].tolist() == [50, 38]
    assert set(out["losses"]) == {"commitment", "codebook"}
    sum(out["losses"].values()).backward()
    assert tok.encoder.conv1.weight.grad is not None and tok.quantizer.codebook.grad is not None
