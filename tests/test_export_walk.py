"""Every registered family, through its tiny variant: export.to_onnx, then OnnxTokenizer (onnxruntime + numpy)
against the PyTorch tokenizer at two input shapes: the same Tokens (ids identical, latents within 1e-4,
same lengths, sizes, grid and meta) and reconstructions within 1e-4 (stochastic decoders get the same noise).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import zoo
from export import NumpyTokens, OnnxTokenizer, to_onnx
from export.plans import PLANNERS, pixels, speech
from registry import list_tokenizers, variant_info

pytestmark = pytest.mark.heavy
pytest.importorskip("onnxruntime", reason="OnnxTokenizer runs the graphs in onnxruntime (pip install 'tokenzoo[onnx]')")
pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript")

TOL = 1e-4
TINY = list_tokenizers("*-tiny")
Case = tuple[Any, dict[str, Any], Callable[[Any], dict[str, Any]]]  # input, encode options, decode options


def no_options(tokens: Any) -> dict[str, Any]:
    return {}


def cases(tok: Any) -> list[Case]:
    """Two inputs per family (different batch and size; ragged batches where the family takes lengths)."""
    fam, spec = tok.family, tok.spec
    rate = spec.sample_rate
    if fam in ("wavtokenizer", "mosstokenizer"):
        hop = spec.downsample[0]
        x = speech(3, 57 * hop, rate, spec.channels, seed=5)
        depth = {"num_quantizers": 2} if fam == "mosstokenizer" else {}
        return [(speech(2, 40 * hop + 3, rate, spec.channels), {}, no_options),
                (x, {"lengths": [57 * hop, 30 * hop + 1, hop], **depth}, no_options)]
    if fam in ("xytokenizer", "s3tokenizer"):
        return [(speech(1, int(1.37 * rate), rate), {}, no_options),
                (speech(2, 2 * rate, rate, seed=3), {"lengths": [2 * rate, int(1.21 * rate)]}, no_options)]
    if fam == "tadicodec":
        spt, factor, n_mels = tok.samples_per_token, tok.config.down_sample_factor, tok.config.n_mels

        def flow_inputs(tokens: Any) -> dict[str, Any]:
            b, n = tokens.ids.shape
            g = torch.Generator().manual_seed(b)
            return {"text_ids": torch.randint(0, tok.config.text_vocab_size, (b, 6), generator=g),
                    "noise": torch.randn(b, factor * n, n_mels, generator=g)}

        return [(speech(2, 5 * spt + 100, rate), {}, flow_inputs),
                (speech(2, 7 * spt, rate, seed=3), {"lengths": [7 * spt, 3 * spt + 11]}, flow_inputs)]
    if fam == "uniflow":
        side = tok.config.image_size

        def image_noise(tokens: Any) -> dict[str, Any]:
            g = torch.Generator().manual_seed(4)
            return {"noise": torch.randn(tokens.latent.shape[0], 3, side, side, generator=g)}

        return [(pixels(2, 3, side, side), {}, image_noise),
                (pixels(1, 3, side - 5, side - 12, seed=1), {}, image_noise)]
    if fam == "uniwetok":
        def bit_noise(tokens: Any) -> dict[str, Any]:
            b, h, w, _ = tokens.ids.shape
            return {"noise": torch.randn(b, h, w, tok.config.z_channels, generator=torch.Generator().manual_seed(5))}

        return [(pixels(2, 3, 32, 32), {}, bit_noise), (pixels(1, 3, 21, 45, seed=3), {}, bit_noise)]
    if fam == "tokenflow":
        side = tok.config.image_size
        return [(pixels(2, 3, side, side), {}, no_options), (pixels(1, 3, side, side, seed=1), {}, no_options)]
    if fam == "omnitokenizer":
        return [(pixels(2, 3, 16, 24), {}, no_options), (pixels(1, 3, 6, 13, 9, seed=1), {}, no_options)]
    # a family added without a case here: the spec's input at two batch sizes
    if spec.modality == "audio":
        return [(speech(b, rate, rate, spec.channels, seed=b), {}, no_options) for b in (1, 2)]
    size = tuple(spec.input_size or (64, 64))
    return [(pixels(b, spec.channels, *size, seed=b), {}, no_options) for b in (1, 2)]


def plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else list(v)))


def assert_same_tokens(ours: NumpyTokens, ref: Any) -> None:
    for name in ("ids", "lengths", "original_size"):
        want, got = getattr(ref, name), getattr(ours, name)
        assert (want is None) == (got is None), name
        if want is not None:
            assert got.shape == tuple(want.shape) and np.array_equal(got, want.numpy()), name
    if ref.latent is not None:
        assert ours.latent.shape == tuple(ref.latent.shape)
        assert float(np.abs(ours.latent - ref.latent.numpy()).max()) <= TOL
    assert tuple(ours.grid) == tuple(ref.grid) and tuple(ours.codebook_sizes) == tuple(ref.codebook_sizes)
    assert ours.modality == ref.modality and plain(ours.meta) == plain(ref.meta)
    assert set(ours.extras) == set(ref.extras)
    for key, value in ref.extras.items():
        assert np.array_equal(ours.extras[key], value.numpy()), key


def numpy_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in options.items()}


def test_every_family_has_a_tiny_variant_and_a_plan() -> None:
    families = {variant_info(n).family for n in list_tokenizers()}
    tiny = {variant_info(n).family for n in TINY}
    assert families - tiny == set(), f"families without a *-tiny variant to walk: {sorted(families - tiny)}"
    assert families - set(PLANNERS) == set(), f"families on the generic export plan: {sorted(families - set(PLANNERS))}"


@pytest.fixture(scope="module", params=TINY)
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, OnnxTokenizer]:
    torch.manual_seed(0)
    tok = zoo.create_tokenizer(request.param).eval()
    out = tmp_path_factory.mktemp(request.param)
    summary = to_onnx(tok, out)
    assert summary["graphs"] and all(g["bytes"] > 0 for g in summary["graphs"].values())
    return tok, OnnxTokenizer(out, threads=1)


@pytest.mark.parametrize("case", [0, 1])
def test_onnxruntime_tokenizer_matches_pytorch(exported: tuple[Any, OnnxTokenizer], case: int) -> None:
    tok, onnx_tok = exported
    x, encode_options, decode_options = cases(tok)[case]
    with torch.no_grad():
        ref = tok.encode(x, **encode_options)
    ours = onnx_tok.encode(x.numpy(), **encode_options)
    assert_same_tokens(ours, ref)
    if not tok.spec.can_decode:
        with pytest.raises(zoo.UnsupportedError, match="cannot decode"):
            onnx_tok.decode(ours)
        return
    options = decode_options(ref)
    with torch.no_grad():
        want = tok.decode(ref, **options).numpy()
    got = onnx_tok.decode(ours, **numpy_options(options))
    assert got.dtype == np.float32 and got.shape == want.shape
    assert float(np.abs(got - want).max()) <= TOL
    # zoo Tokens decode too (the runtime reads their fields without importing torch itself)
    again = onnx_tok.decode(ref, **numpy_options(options))
    assert again.shape == want.shape and float(np.abs(again - want).max()) <= TOL


def test_long_audio_goes_through_the_same_windows(exported: tuple[Any, OnnxTokenizer]) -> None:
    """Past one encoder window (30 s) the runtime windows as PyTorch does: XY-Tokenizer's 20 s hops and
    375-code decoder windows, S3Tokenizer's 30 s mel windows merged without losing tokens."""
    tok, onnx_tok = exported
    if tok.family not in ("xytokenizer", "s3tokenizer"):
        pytest.skip(f"{tok.family} has no encoder windows (its graphs take any length)")
    rate = tok.spec.sample_rate
    x = speech(2, 65 * rate, rate, seed=11)
    lengths = [65 * rate, 3 * rate + 17]
    with torch.no_grad():
        ref = tok.encode(x, lengths=lengths)
    ours = onnx_tok.encode(x.numpy(), lengths=lengths)
    assert_same_tokens(ours, ref)
    if tok.spec.can_decode:
        with torch.no_grad():
            want = tok.decode(ref).numpy()
        got = onnx_tok.decode(ours)
        assert got.shape == want.shape and float(np.abs(got - want).max()) <= TOL


def test_speech_prompts_and_sampler_options(exported: tuple[Any, OnnxTokenizer]) -> None:
    """TaDiCodec's voice-cloning path: the prompt's mel leads the clip's in encode (mel + mel_encoder graphs)
    and the sampled sequence in decode; steps and guidance scale are runtime options of the numpy loop."""
    tok, onnx_tok = exported
    if tok.family != "tadicodec":
        pytest.skip(f"{tok.family} takes no speech prompt")
    spt, rate = tok.samples_per_token, tok.spec.sample_rate
    x, prompt = speech(2, 6 * spt, rate, seed=3), speech(1, 2 * spt + 50, rate, seed=9)
    lengths = [6 * spt, 4 * spt + 3]
    with torch.no_grad():
        ref = tok.encode(x, prompt=prompt, lengths=lengths)
    ours = onnx_tok.encode(x.numpy(), prompt=prompt.numpy(), lengths=lengths)
    assert_same_tokens(ours, ref)
    g = torch.Generator().manual_seed(1)
    b, n = ref.ids.shape
    frames = tok.config.down_sample_factor * n - int(ref.extras["prompt_frames"][0])
    options = {"prompt": prompt, "text_ids": torch.randint(0, tok.config.text_vocab_size, (b, 5), generator=g),
               "noise": torch.randn(b, frames, tok.config.n_mels, generator=g), "steps": 3, "cfg_scale": 1.5}
    with torch.no_grad():
        want = tok.decode(ref, **options).numpy()
    got = onnx_tok.decode(ours, **numpy_options(options))
    assert got.shape == want.shape and float(np.abs(got - want).max()) <= TOL
    with pytest.raises(zoo.InputError, match="same prompt"):
        onnx_tok.decode(ours, text_ids=options["text_ids"].numpy())
    with pytest.raises(zoo.UnsupportedError, match="text_ids"):
        onnx_tok.decode(ours, text="hello", prompt=prompt.numpy())


def test_manifest_describes_the_export(exported: tuple[Any, OnnxTokenizer]) -> None:
    tok, onnx_tok = exported
    m = onnx_tok.manifest
    assert m["family"] == tok.family and m["variant"] == tok.variant and m["opset"] >= 18
    assert m["tokenzoo_version"] == zoo.__version__ and m["spec"]["modality"] == tok.spec.modality
    assert m["checkpoint"]["of"] == "state_dict" and len(m["checkpoint"]["sha256"]) == 64
    assert m["input"]["value_range"] == list(tok.spec.value_range)
    for graph in m["graphs"].values():
        assert graph["inputs"] and graph["outputs"] and not graph["external_data"]
        assert any(isinstance(d, str) for d in graph["inputs"][0]["shape"]), "the batch axis should be dynamic"
