"""The shared audio blocks WavTokenizer brought: spectral (STFT / iSTFT), SEANet padding, Vocos blocks.

References are written here from the upstream definitions (torch.istft / torch.stft, Vocos' fold-based
"same" iSTFT, EnCodec's pad1d with zero extension, the explicit-softmax attention block), so a change in
the exportable implementations that breaks the arithmetic fails here.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from registry.errors import CheckpointError, ConfigError
from zoo.layers.seanet import (
    SConv1d,
    SEANetEncoder,
    SEANetEncoderConfig,
    convert_encodec_encoder,
    encodec_encoder_key_map,
    fold_weight_norm,
    lstm_scan,
)
from zoo.layers.spectral import STFT, InverseSTFT, ISTFTHead, irfft_bases, overlap_add
from zoo.layers.vocos import AdaLayerNorm, AttnBlock, ConvNeXtBlock, VocosBackbone, VocosBackboneConfig


def vocos_same_istft(spec: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """Vocos' "same" ISTFT: irfft, window, fold overlap-add, trim (win - hop) / 2, divide by the envelope."""
    window = torch.hann_window(n_fft, dtype=spec.real.dtype)
    frames = spec.shape[-1]
    pad = (n_fft - hop) // 2
    size = (frames - 1) * hop + n_fft
    ifft = torch.fft.irfft(spec, n_fft, dim=1) * window[None, :, None]
    y = F.fold(ifft, (1, size), (1, n_fft), stride=(1, hop))[:, 0, 0, pad:-pad]
    env = F.fold(window.square().expand(1, frames, -1).transpose(1, 2), (1, size), (1, n_fft), stride=(1, hop))
    return y / env.squeeze()[pad:-pad]


@pytest.mark.parametrize("n_fft,hop", [(1280, 320), (2400, 600), (64, 16), (30, 7)])
def test_istft_same_matches_vocos_fold(n_fft: int, hop: int) -> None:
    torch.manual_seed(0)
    bins = n_fft // 2 + 1
    real, imag = torch.randn(2, 9, bins, dtype=torch.float64), torch.randn(2, 9, bins, dtype=torch.float64)
    ref = vocos_same_istft(torch.complex(real, imag).transpose(1, 2), n_fft, hop)
    istft = InverseSTFT(n_fft, hop, padding="same").double()
    ours = istft(real, imag)
    assert ours.shape == ref.shape == (2, istft.output_length(9))
    if (n_fft - hop) % 2 == 0:
        assert ours.shape[-1] == 9 * hop  # "same": one hop of audio per frame
    assert float((ours - ref).abs().max()) < 1e-6  # the DFT bases are stored in float32


@pytest.mark.parametrize("n_fft,hop,win", [(1024, 256, 1024), (64, 16, 48), (31, 8, 31)])
def test_istft_center_matches_torch(n_fft: int, hop: int, win: int) -> None:
    torch.manual_seed(1)
    bins = n_fft // 2 + 1
    real, imag = torch.randn(1, 12, bins, dtype=torch.float64), torch.randn(1, 12, bins, dtype=torch.float64)
    window = torch.hann_window(win, dtype=torch.float64)
    ref = torch.istft(torch.complex(real, imag).transpose(1, 2), n_fft, hop, win, window, center=True)
    ours = InverseSTFT(n_fft, hop, win, padding="center").double()(real, imag)
    assert ours.shape == ref.shape
    assert float((ours - ref).abs().max()) < 1e-6  # the DFT bases are stored in float32


def test_irfft_bases_ignore_dc_and_nyquist_imaginary_parts() -> None:
    """torch.fft.irfft drops Im of the DC and Nyquist bins; the bases must do the same."""
    n_fft = 16
    spec = torch.randn(3, n_fft // 2 + 1, dtype=torch.complex128)
    ref = torch.fft.irfft(spec, n_fft)
    ours = torch.cat([spec.real, spec.imag], -1) @ irfft_bases(n_fft)
    assert float((ours - ref).abs().max()) < 1e-12


def test_overlap_add_matches_fold() -> None:
    frames = torch.randn(2, 7, 10, dtype=torch.float64)
    for hop in (3, 5, 10, 11):
        ref = F.fold(frames.transpose(1, 2), (1, 6 * hop + 10), (1, 10), stride=(1, hop))[:, 0, 0]
        assert torch.allclose(overlap_add(frames, hop), ref, atol=1e-12)


@pytest.mark.parametrize("padding", ["center", "same"])
def test_stft_matches_torch_and_round_trips(padding: str) -> None:
    torch.manual_seed(2)
    n_fft, hop = 256, 64
    x = torch.randn(2, 2048, dtype=torch.float64)
    stft = STFT(n_fft, hop, padding=padding).double()
    real, imag = stft(x)
    pad = n_fft // 2 if padding == "center" else (n_fft - hop) // 2
    xp = F.pad(x.unsqueeze(1), (pad, pad), mode="reflect")[:, 0]
    ref = torch.stft(xp, n_fft, hop, window=torch.hann_window(n_fft, dtype=torch.float64), center=False,
                     return_complex=True).transpose(1, 2)
    # float32 DFT bases: errors of ~1e-7 of the spectrum's scale (|X| up to ~40 here)
    assert float((real - ref.real).abs().max()) < 1e-4
    assert float((imag - ref.imag).abs().max()) < 1e-4
    if padding == "center":
        back = InverseSTFT(n_fft, hop, padding="center").double()(real, imag)
        assert float((back - x[:, : back.shape[-1]]).abs().max()) < 1e-5
    mag = stft.magnitude(x)
    assert torch.allclose(mag, ref.abs(), atol=1e-4)


def test_istft_head_magnitude_clip_and_shape() -> None:
    head = ISTFTHead(dim=8, n_fft=32, hop_length=8)
    with torch.no_grad():
        head.out.weight.zero_()
        head.out.bias.fill_(50.0)  # exp(50) must be clipped to 100
    with torch.no_grad():
        real, imag = head.spectrum(torch.zeros(1, 5, 8))
    assert float(torch.sqrt(real.square() + imag.square()).max()) == pytest.approx(100.0, rel=1e-5)
    assert head(torch.randn(2, 5, 8)).shape == (2, 5 * 8)


def test_spectral_config_errors() -> None:
    with pytest.raises(ConfigError, match="padding"):
        InverseSTFT(32, 8, padding="valid")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="win_length == n_fft"):
        InverseSTFT(32, 8, win_length=16, padding="same")


# -- SEANet ------------------------------------------------------------------------------------------


def encodec_pad_reference(x: torch.Tensor, kernel: int, stride: int, dilation: int) -> torch.Tensor:
    """EnCodec's non-causal SConv1d padding with pad1d's zero extension of short inputs."""
    span = (kernel - 1) * dilation + 1
    total = span - stride
    length = x.shape[-1]
    frames = (length - span + total) / stride + 1
    extra = (math.ceil(frames) - 1) * stride + (span - total) - length
    right, left = total // 2, total - total // 2
    right += extra
    longest = max(left, right)
    ext = 0
    if length <= longest:
        ext = longest - length + 1
        x = F.pad(x, (0, ext))
    padded = F.pad(x, (left, right), mode="reflect")
    return padded[..., : padded.shape[-1] - ext]


@pytest.mark.parametrize("kernel,stride,dilation", [(7, 1, 1), (3, 1, 2), (4, 2, 1), (10, 5, 1), (16, 8, 1), (1, 1, 1)])
def test_sconv_padding_matches_encodec_for_every_length(kernel: int, stride: int, dilation: int) -> None:
    conv = SConv1d(2, 3, kernel, stride=stride, dilation=dilation)
    for length in range(1, 40):
        x = torch.randn(1, 2, length)
        ref = encodec_pad_reference(x, kernel, stride, dilation)
        assert torch.equal(conv.pad(x, None), ref), length
        # the gather path (export and ragged batches) must give the same values
        lengths = torch.tensor([length])
        assert torch.equal(conv.pad(torch.cat([x, torch.randn(1, 2, 5)], -1), lengths)[..., : ref.shape[-1]], ref)
        assert conv(x).shape[-1] == math.ceil(length / stride)


def test_seanet_ragged_batch_equals_each_clip_alone() -> None:
    torch.manual_seed(3)
    cfg = SEANetEncoderConfig(dimension=8, n_filters=4, ratios=[3, 2])
    enc = SEANetEncoder(cfg).eval()
    lengths = [50, 31, 6, 1]
    x = torch.randn(len(lengths), 1, 50)
    with torch.no_grad():
        batched = enc(x, torch.tensor(lengths))
        for b, n in enumerate(lengths):
            alone = enc(x[b : b + 1, :, :n])
            assert alone.shape[-1] == math.ceil(n / 6)
            assert float((batched[b, :, : alone.shape[-1]] - alone[0]).abs().max()) < 1e-5


@pytest.mark.heavy  # torch's eager `scan` takes seconds to set up; the ONNX encoder test covers it again
def test_lstm_scan_matches_nn_lstm() -> None:
    lstm = torch.nn.LSTM(6, 6, 2)
    seq = torch.randn(11, 3, 6)
    with torch.no_grad():
        assert torch.allclose(lstm_scan(lstm, seq), lstm(seq)[0], atol=1e-6)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # old-style weight_norm: the key layout upstream saved
def test_weight_norm_fold_equals_torch_weight_norm() -> None:
    conv = torch.nn.utils.weight_norm(torch.nn.Conv1d(4, 5, 3))
    with torch.no_grad():
        conv.weight_g.mul_(1.7)
    folded = fold_weight_norm(conv.weight_g, conv.weight_v)
    x = torch.randn(1, 4, 9)
    assert torch.equal(F.conv1d(x, folded, conv.bias), conv(x))


def test_encodec_key_map_matches_upstream_numbering() -> None:
    keys = encodec_encoder_key_map(SEANetEncoderConfig())
    assert keys["stem"] == "model.0.conv.conv"
    assert keys["stages.0.blocks.0.conv1"] == "model.1.block.1.conv.conv"
    assert keys["stages.0.down"] == "model.3.conv.conv"
    assert keys["stages.3.down"] == "model.12.conv.conv"
    assert keys["lstm.lstm"] == "model.13.lstm"
    assert keys["head"] == "model.15.conv.conv"
    two = encodec_encoder_key_map(SEANetEncoderConfig(n_residual_layers=2, true_skip=True))
    assert two["stages.0.blocks.1.conv1"] == "model.2.block.1.conv.conv"
    assert "stages.0.blocks.0.shortcut" not in two and two["stages.0.down"] == "model.4.conv.conv"


def test_convert_encodec_encoder_names_missing_weights() -> None:
    with pytest.raises(CheckpointError, match="model.0.conv.conv.weight_g"):
        convert_encodec_encoder({}, "encoder.", SEANetEncoderConfig())


# -- Vocos ---------------------------------------------------------------------------------------------


def test_adalayernorm_picks_rows_per_condition() -> None:
    norm = AdaLayerNorm(3, 4)
    with torch.no_grad():
        norm.scale.weight.copy_(torch.arange(12.0).view(3, 4))
        norm.shift.weight.copy_(-torch.arange(12.0).view(3, 4))
    x = torch.randn(2, 5, 4)
    base = F.layer_norm(x, (4,), eps=1e-6)
    assert torch.allclose(norm(x, 1), base * norm.scale.weight[1] + norm.shift.weight[1])
    per_item = norm(x, torch.tensor([0, 2]))
    assert torch.allclose(per_item[1], base[1] * norm.scale.weight[2] + norm.shift.weight[2])


def test_attn_block_matches_explicit_softmax() -> None:
    torch.manual_seed(4)
    block = AttnBlock(64).eval()
    x = torch.randn(2, 64, 13)
    h = block.norm(x)
    q, k, v = block.q(h), block.k(h), block.v(h)
    w = torch.softmax(torch.bmm(q.transpose(1, 2), k) * 64**-0.5, dim=2)
    ref = x + block.proj_out(torch.bmm(v, w.transpose(1, 2)))
    with torch.no_grad():
        assert float((block(x) - ref).abs().max()) < 1e-5


def test_convnext_without_adanorm_and_backbone_shapes() -> None:
    block = ConvNeXtBlock(16, 32, layer_scale_init_value=0.5)
    assert isinstance(block.norm, torch.nn.LayerNorm)
    assert block(torch.randn(2, 16, 7)).shape == (2, 16, 7)
    plain = VocosBackbone(VocosBackboneConfig(input_channels=8, dim=32, intermediate_dim=48, num_layers=2,
                                              adanorm_num_embeddings=None, pos_net=False))
    assert plain.pos_net is None
    assert plain(torch.randn(1, 8, 5)).shape == (1, 5, 32)
    wt = VocosBackbone(VocosBackboneConfig(input_channels=8, dim=32, intermediate_dim=48, num_layers=2))
    names = set(wt.state_dict())
    assert {"pos_net.2.q.weight", "pos_net.5.weight", "norm.scale.weight", "convnext.1.gamma"} <= names


def test_masked_group_norm_matches_group_norm_on_each_item() -> None:
    from zoo.layers.vocos import frame_mask, group_norm

    norm = torch.nn.GroupNorm(4, 8, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.1, 0.1)
    x = torch.randn(3, 8, 10)
    lengths = torch.tensor([10, 7, 1])
    out = group_norm(norm, x, frame_mask(lengths, 10))
    for b, n in enumerate(lengths.tolist()):
        assert torch.allclose(out[b : b + 1, :, :n], norm(x[b : b + 1, :, :n]), atol=1e-5)


def test_backbone_and_istft_ragged_batch_equal_each_item_alone() -> None:
    torch.manual_seed(5)
    cfg = VocosBackboneConfig(input_channels=8, dim=32, intermediate_dim=48, num_layers=2, pos_net_groups=8)
    backbone = VocosBackbone(cfg).eval()
    head = ISTFTHead(32, n_fft=32, hop_length=8).eval()
    lengths = [9, 6, 1]
    x = torch.randn(3, 8, 9)
    with torch.no_grad():
        frames = backbone(x, 0, torch.tensor(lengths))
        audio = head(frames, torch.tensor(lengths))
        for b, n in enumerate(lengths):
            alone = backbone(x[b : b + 1, :, :n], 0)
            assert float((frames[b, :n] - alone[0]).abs().max()) < 1e-5
            solo_audio = head(alone)
            assert float((audio[b, : n * 8] - solo_audio[0]).abs().max()) < 1e-5
        assert bool(torch.isfinite(audio).all())
