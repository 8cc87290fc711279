"""The runtime recipes `OnnxTokenizer` runs around exported graphs, by the name a manifest gives
(`runtime.handler`). Each takes the recipe's numbers from the manifest, so one handler serves every
variant of the families that share it."""

from __future__ import annotations

from export.handlers.audio import AudioCodec
from export.handlers.base import Handler
from export.handlers.image import ImageCodec, ImageFlow, ImageVideo, TensorCodec
from export.handlers.speech import SpeechEncoder, SpeechFlow

HANDLERS: dict[str, type[Handler]] = {
    "audio_codec": AudioCodec,
    "image_codec": ImageCodec,
    "image_flow": ImageFlow,
    "image_video": ImageVideo,
    "speech_encoder": SpeechEncoder,
    "speech_flow": SpeechFlow,
    "tensor": TensorCodec,
}

__all__ = ["HANDLERS", "Handler"]
