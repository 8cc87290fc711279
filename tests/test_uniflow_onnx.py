"""UniFlow (tiny) graphs through torch.onnx (dynamo) and onnxruntime: encoder, full one-step decoder, and the
single velocity step with the sampling loop run around it in numpy (what an ONNX runtime does)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from registry import create_tokenizer

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'tokenzoo[onnx]')")
pytest.importorskip("onnxscript", reason="onnxscript is not installed; torch.onnx dynamo export needs it")

FLOAT_TOL = 1e-4
SIDE, GRID, LATENT = 32, 4, 8
BATCH = {0: "batch"}


@pytest.fixture(scope="module")
def tok():
    torch.manual_seed(0)
    t = create_tokenizer("uniflow-tiny").eval()
    with torch.no_grad():
        for p in t.flow_head.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return t


def export(module: torch.nn.Module, args: tuple, dynamic: tuple, path) -> ort.InferenceSession:
    # Example batch 2: torch.export specialises dimensions of size 1.
    program = torch.onnx.export(module, args, dynamo=True, dynamic_shapes=dynamic, opset_version=18)
    program.save(str(path))
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run(session: ort.InferenceSession, *arrays: np.ndarray) -> np.ndarray:
    names = [i.name for i in session.get_inputs()]
    return session.run(None, dict(zip(names, arrays, strict=True)))[0]


@pytest.fixture(scope="module")
def sessions(tok, tmp_path_factory):
    folder = tmp_path_factory.mktemp("uniflow_onnx")
    latent = torch.randn(2, GRID, GRID, LATENT)
    cond = torch.randn(2, GRID * GRID, 32)
    state = torch.randn(2, 3, SIDE, SIDE)
    return {
        "encoder": export(tok.encoder_module().eval(), (torch.rand(2, 3, SIDE, SIDE) * 2 - 1,), (BATCH,),
                          folder / "enc.onnx"),
        "full": export(tok.decoder_module().eval(), (latent, state), (BATCH, BATCH), folder / "dec.onnx"),
        "condition": export(tok.decoder_module("condition").eval(), (latent,), (BATCH,), folder / "cond.onnx"),
        "velocity": export(tok.decoder_module("velocity").eval(), (state, torch.rand(2), cond),
                           (BATCH, BATCH, BATCH), folder / "vel.onnx"),
    }


@pytest.mark.parametrize("batch", [1, 3])
def test_encoder_graph_gives_the_latent(tok, sessions, batch) -> None:
    x = torch.rand(batch, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(batch)) * 2 - 1
    out = run(sessions["encoder"], x.numpy())
    with torch.no_grad():
        ref = tok.encode_latent(x)
    assert out.shape == (batch, GRID, GRID, LATENT)
    assert float(np.abs(out - ref.numpy()).max()) <= FLOAT_TOL


@pytest.mark.parametrize("batch", [1, 3])
def test_full_decoder_graph_matches_with_given_noise(tok, sessions, batch) -> None:
    g = torch.Generator().manual_seed(10 + batch)
    latent = torch.randn(batch, GRID, GRID, LATENT, generator=g)
    noise = torch.randn(batch, 3, SIDE, SIDE, generator=g)
    out = run(sessions["full"], latent.numpy(), noise.numpy())
    ref = tok.decode(latent, noise=noise)
    assert out.shape == (batch, 3, SIDE, SIDE)
    assert float(np.abs(out - ref.numpy()).max()) <= FLOAT_TOL


@pytest.mark.parametrize(("batch", "steps", "schedule"), [(1, 1, "linear"), (3, 4, "pow_0.5")])
def test_sampling_loop_around_the_exported_velocity_step(tok, sessions, batch, steps, schedule) -> None:
    g = torch.Generator().manual_seed(20 + batch)
    latent = torch.randn(batch, GRID, GRID, LATENT, generator=g)
    noise = torch.randn(batch, 3, SIDE, SIDE, generator=g)
    recipe = tok.flow_recipe(steps=steps, schedule=schedule)
    cond = run(sessions["condition"], latent.numpy())
    x = noise.numpy()
    times = recipe["times"]
    for t0, t1 in zip(times, times[1:], strict=False):
        v = run(sessions["velocity"], x, np.full((batch,), t0, dtype=np.float32), cond)
        x = x + np.float32(t1 - t0) * v
    scale = np.asarray(recipe["output_scale"], dtype=np.float32).reshape(1, 3, 1, 1)
    shift = np.asarray(recipe["output_shift"], dtype=np.float32).reshape(1, 3, 1, 1)
    image = x * scale + shift
    ref = tok.decode(latent, noise=noise, steps=steps, schedule=schedule)
    assert float(np.abs(image - ref.numpy()).max()) <= FLOAT_TOL
    # the torch decode accepts the ONNX step in place of its own
    def onnx_step(x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(run(sessions["velocity"], x.numpy(), t.numpy().astype(np.float32), c.numpy()))

    via = tok.decode(latent, noise=noise, steps=steps, schedule=schedule, velocity_fn=onnx_step)
    assert float((via - ref).abs().max()) <= FLOAT_TOL


def test_decoder_graph_without_noise_samples_it(tok, tmp_path) -> None:
    latent = torch.randn(2, GRID, GRID, LATENT, generator=torch.Generator().manual_seed(1))
    session = export(tok.decoder_module().eval(), (latent,), (BATCH,), tmp_path / "d.onnx")
    first = run(session, latent[:1].numpy())
    second = run(session, latent[:1].numpy())
    assert first.shape == (1, 3, SIDE, SIDE) and np.isfinite(first).all()
    assert float(np.abs(first - second).max()) > 0, "two decodes of a stochastic graph drew the same noise"
