"""ONNX export (torch.onnx.export(dynamo=True), opset 18) of TaDiCodec's graphs (tiny variant), run in onnxruntime.

Encoder (speech -> ids), the decoder's parts a runtime loops over (ids -> condition, one conditional and one
unconditional velocity step, mel -> speech) and the whole decoder with its steps unrolled. Each graph is
exported once with dynamic batch and lengths and run at two other shapes: ids identical, floats within 1e-4.
The sampling loop then runs around the exported velocity steps (`decode(velocity_fn=...)`) and matches the
PyTorch decode.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
from zoo.tadicodec import TaDiCodecTokenizer

pytestmark = pytest.mark.heavy
ort = pytest.importorskip("onnxruntime", reason="the ONNX checks run the graphs in onnxruntime")
pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript")

PER_ID, MELS = 3840, 16


@pytest.fixture(scope="module")
def tok() -> TaDiCodecTokenizer:
    torch.manual_seed(0)
    t = zoo.create_tokenizer("tadicodec-tiny").eval()
    with torch.no_grad():
        for p in t.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        features = t.downsample(t.encoder_features(t.mel(speech(1, 48_000, 99))))[0]
        t.vq_in_linear.bias.copy_(-(features.mean(0) @ t.vq_in_linear.weight.T) + 0.02 * torch.randn(6))
    return t


def speech(batch: int, samples: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 24000.0
    tone = torch.sin(2 * math.pi * 150.0 * t) * (0.5 + 0.5 * torch.sin(2 * math.pi * 3 * t))
    return (0.3 * tone + 0.05 * torch.randn(batch, 1, samples, generator=g)).float()


def export(module: torch.nn.Module, args: tuple, path: Path, names: list[str], shapes: tuple) -> object:
    torch.onnx.export(module.eval(), args, str(path), dynamo=True, opset_version=18, input_names=names,
                      dynamic_shapes=shapes, verbose=False)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_encoder_graph(tok: TaDiCodecTokenizer, tmp_path: Path) -> None:
    batch, samples = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("samples", min=PER_ID, max=2_400_000)
    session = export(tok.encoder_module(), (speech(2, 20_000, 0),), tmp_path / "enc.onnx", ["audio"],
                     (({0: batch, 2: samples},),))
    for x in (speech(1, 33_333, 1), speech(3, 9_000, 2)):
        with torch.no_grad():
            ours = tok.encode_ids(x)
        out = session.run(None, {"audio": x.numpy()})[0]
        assert out.shape == tuple(ours.shape) == (x.shape[0], (x.shape[-1] // 480) // 8)
        assert np.array_equal(out, ours.numpy())


def test_decoder_parts_and_the_loop_around_the_velocity_steps(tok: TaDiCodecTokenizer, tmp_path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=64)
    ids_len, frames, text_len = (torch.export.Dim(n, min=2, max=4096) for n in ("ids_len", "frames", "text_len"))
    ids = tok.encode_ids(speech(2, 20_000, 3))
    cond_s = export(tok.decoder_module("condition"), (ids,), tmp_path / "cond.onnx", ["ids"],
                    (({0: batch, 1: ids_len},),))
    x = torch.randn(2, 40, MELS)
    t = torch.full((2,), 0.3)
    cond = torch.randn(2, 40, tok.config.hidden_size)
    text = torch.tensor([[3, 4, 5], [6, 7, 8]])
    vel_s = export(tok.decoder_module("velocity"), (x, t, cond, text), tmp_path / "vel.onnx",
                   ["x", "t", "cond", "text_ids"],
                   (({0: batch, 1: frames}, {0: batch}, {0: batch, 1: frames}, {0: batch, 1: text_len}),))
    unc_s = export(tok.decoder_module("velocity_uncond"), (x, t), tmp_path / "unc.onnx", ["x", "t"],
                   (({0: batch, 1: frames}, {0: batch}),))
    voc_s = export(tok.decoder_module("vocoder"), (x,), tmp_path / "voc.onnx", ["mel"], (({0: batch, 1: frames},),))
    for b, n, lt in ((1, 5, 7), (3, 2, 2)):
        ids = torch.randint(0, 64, (b, n))
        x = torch.randn(b, 8 * n, MELS)
        t = torch.rand(b)
        text = torch.randint(0, 100, (b, lt))
        with torch.no_grad():
            cond = tok.condition(ids)
            checks = (
                (cond_s.run(None, {"ids": ids.numpy()})[0], cond),
                (vel_s.run(None, {"x": x.numpy(), "t": t.numpy(), "cond": cond.numpy(), "text_ids": text.numpy()})[0],
                 tok.velocity(x, t, cond, text)),
                (unc_s.run(None, {"x": x.numpy(), "t": t.numpy()})[0], tok.velocity_uncond(x, t)),
                (voc_s.run(None, {"mel": x.numpy()})[0], tok.vocode(x)),
            )
        for out, ours in checks:
            assert out.shape == tuple(ours.shape) and np.abs(out - ours.numpy()).max() <= 1e-4

    def onnx_velocity(x, t, cond, text):
        feed = {"x": x.numpy(), "t": t.numpy(), "cond": cond.numpy(), "text_ids": text.numpy()}
        return torch.from_numpy(vel_s.run(None, feed)[0])

    def onnx_uncond(x, t):
        return torch.from_numpy(unc_s.run(None, {"x": x.numpy(), "t": t.numpy()})[0])

    tokens = tok.encode(speech(1, 30_000, 4))
    prompt = speech(1, 4_800, 5)
    noise = torch.randn(1, 8 * tokens.ids.shape[1] - 10, MELS, generator=torch.Generator().manual_seed(6))
    kw = {"text_ids": [[1, 2, 3, 4]], "prompt": prompt, "noise": noise}
    ours = tok.decode(tokens.replace(original_size=None), **kw)
    looped = tok.decode(tokens.replace(original_size=None), velocity_fn=onnx_velocity, uncond_velocity_fn=onnx_uncond,
                        **kw)
    assert looped.shape == ours.shape and float((looped - ours).abs().max()) <= 1e-4


def test_whole_decoder_graph_with_the_steps_unrolled(tok: TaDiCodecTokenizer, tmp_path: Path) -> None:
    two_steps = zoo.create_tokenizer("tadicodec-tiny", sampling_steps=2).eval()  # a smaller unrolled graph
    two_steps.load_state_dict(tok.state_dict())
    tok = two_steps
    batch, ids_len, text_len = (torch.export.Dim(n, min=1 if n == "batch" else 2, max=512)
                                for n in ("batch", "ids_len", "text_len"))
    frames = 8 * ids_len
    ids = torch.randint(0, 64, (2, 3))
    text = torch.randint(0, 100, (2, 4))
    noise = torch.randn(2, 24, MELS)
    session = export(tok.decoder_module(), (ids, text, noise), tmp_path / "dec.onnx", ["ids", "text_ids", "noise"],
                     (({0: batch, 1: ids_len}, {0: batch, 1: text_len}, {0: batch, 1: frames}),))
    for b, n, lt in ((1, 4, 6), (2, 2, 3)):
        ids = torch.randint(0, 64, (b, n))
        text = torch.randint(0, 100, (b, lt))
        noise = torch.randn(b, 8 * n, MELS)
        with torch.no_grad():
            ours = tok.decode_ids(ids, text, noise)
        out = session.run(None, {"ids": ids.numpy(), "text_ids": text.numpy(), "noise": noise.numpy()})[0]
        assert out.shape == tuple(ours.shape) == (b, 1, 8 * n * 480)
        assert np.abs(out - ours.numpy()).max() <= 1e-4
