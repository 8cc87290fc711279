"""Image and video tokenizers in onnxruntime.

Recipes: "image_codec" (UniWeTok: padded to whole tokens, decoder noise as an input; TokenFlow: one
fixed size, flat multi-scale ids), "image_flow" (UniFlow: continuous latent, pixels sampled from noise
around the exported velocity step), "image_video" (OmniTokenizer: one graph pair for images and one
for videos, sizes padded up and cropped back on decode) and "tensor" (any other family: the graphs
on the canonical tensors, no bookkeeping).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from export.errors import InputError, UnsupportedError
from export.handlers.base import Handler
from export.media import canonical, float_array, int_ids, rng_of
from export.sampler import sample, time_grid
from export.tokens import NumpyTokens


def _sizes(original: Any, batch: int) -> list[int] | None:
    """The first item's recorded size (every item of a batch shares it, as in the PyTorch decodes)."""
    if original is None:
        return None
    return [int(v) for v in np.asarray(original).reshape(batch, -1)[0]]


class ImageCodec(Handler):
    """Image -> discrete ids; ids (+ noise) -> image cropped to the encoded size."""

    def encode(self, x: Any, **options: Any) -> NumpyTokens:
        r = self.recipe
        if options.get("resize"):
            raise UnsupportedError(
                f"{self.tok.name}: encode(resize=True) resizes with PyTorch's antialiased bicubic filter, which the "
                f"onnxruntime tokenizer does not restate; resize to {r['size'][0]}x{r['size'][1]} first"
            )
        options.pop("resize", None)
        self.reject_unknown(options, (), "encode")
        image = canonical(x, "image", self.spec.channels)
        batch, _, height, width = image.shape
        original = None
        if r.get("size"):
            if [height, width] != list(r["size"]):
                raise InputError(
                    f"{self.tok.name} takes {r['size'][0]}x{r['size'][1]} images; got {height}x{width}. Center-crop "
                    "and resize first."
                )
        else:
            s, least = r["pad"]["multiple"], r["pad"].get("min_tokens", 1)
            th, tw = max(-(-height // s), least) * s, max(-(-width // s), least) * s
            image = np.pad(image, ((0, 0), (0, 0), (0, th - height), (0, tw - width)))
            original = np.tile(np.asarray([[height, width]], dtype=np.int64), (batch, 1))
        ids = self.run("encoder", image).astype(np.int64)
        fields: dict[str, Any] = {}
        if r["ids"] == "grid":
            fields["codebook_sizes"] = (2 ** r["group_bits"],) * r["groups"]
            grid = (int(ids.shape[1]), int(ids.shape[2]))
        else:
            grid = (int(ids.shape[1]),)
        return self.tok.make_tokens(ids, grid=grid, original_size=original, meta=dict(r.get("meta") or {}), **fields)

    def decode(self, tokens: Any, noise: Any = None, rng: Any = None, **options: Any) -> np.ndarray:
        r = self.recipe
        options.pop("restore_size", None)
        self.reject_unknown(options, (), "decode")
        tk = self.tokens_of(tokens)
        ids = tk.ids if tk is not None else tokens
        if tk is not None and ids is None:
            raise InputError(f"these tokens hold no ids; {self.tok.family} decodes discrete ids only")
        if r["ids"] == "grid":
            if tk is not None and tuple(tk.codebook_sizes) != (2 ** r["group_bits"],) * r["groups"]:
                raise UnsupportedError(
                    f"the graphs decode {r['groups']} groups of {r['group_bits']} bits; these tokens group them as "
                    f"{list(tk.codebook_sizes)[:4]}... Regroup with the PyTorch tokenizer (from_bits) first"
                )
            ids = int_ids(ids, (2 ** r["group_bits"],) * r["groups"])
            if ids.ndim == 3:
                ids = ids[None]
            if ids.ndim != 4 or ids.shape[-1] != r["groups"]:
                raise InputError(f"ids must be laid out (B, h, w, {r['groups']}); got shape {tuple(ids.shape)}")
            b, h, w, _ = ids.shape
            if h * w < r.get("min_decode_tokens", 1):
                raise InputError(
                    f"{self.tok.family} decodes grids of at least {r['min_decode_tokens']} tokens; got {h}x{w}"
                )
            shape = (b, h, w, r["noise_channels"])
            if noise is None:
                noise = rng_of(rng).standard_normal(shape, dtype=np.float32)
            else:
                noise = float_array(noise, "noise")
                if noise.shape != shape:
                    raise InputError(f"decoder noise must be laid out (B, h, w, z) = {shape}; got {tuple(noise.shape)}")
            image = self.run("decoder", ids, noise)
        else:
            ids = int_ids(ids, tuple(self.spec.codebook_sizes))
            if ids.ndim == 1:
                ids = ids[None]
            if ids.ndim != 2 or ids.shape[1] != r["tokens"]:
                raise UnsupportedError(
                    f"the decoder graph takes the full schedule's {r['tokens']} ids per image (B, {r['tokens']}); got "
                    f"shape {tuple(ids.shape)}. Coarse-scale prefixes decode with the PyTorch tokenizer."
                )
            image = self.run("decoder", ids)
        size = _sizes(tk.original_size if tk is not None else None, image.shape[0])
        return image[..., : size[0], : size[1]] if size else image


class ImageFlow(Handler):
    """Image -> continuous latent (B, g, g, C); latent -> image sampled from noise (flow matching)."""

    def encode(self, x: Any, **options: Any) -> NumpyTokens:
        self.reject_unknown(options, (), "encode")
        r, side = self.recipe, self.recipe["size"]
        image = canonical(x, "image", r["channels"])
        batch, _, height, width = image.shape
        if height > side or width > side:
            raise InputError(
                f"{self.tok.family} tokenizes images of at most {side}x{side} pixels (its native and only size); got "
                f"{height}x{width}. Resize first."
            )
        image = np.pad(image, ((0, 0), (0, 0), (0, side - height), (0, side - width)))
        latent = self.run("encoder", image)
        size = np.tile(np.asarray([[height, width]], dtype=np.int64), (batch, 1))
        return self.tok.make_tokens(None, latent=latent, grid=(r["grid"], r["grid"]), original_size=size,
                                    meta=dict(r.get("meta") or {}))

    def decode(self, tokens: Any, noise: Any = None, rng: Any = None, steps: int | None = None, **options: Any) -> Any:
        self.reject_unknown(options, ("schedule", "solver", "cfg_scale", "cfg_interval"), "decode")
        r, flow = self.recipe, self.recipe["flow"]
        tk = self.tokens_of(tokens)
        latent = tk.latent if tk is not None else tokens
        if latent is None:
            raise InputError(
                f"these tokens hold no latent; {self.tok.family} decodes Tokens.latent made by its encode()"
            )
        g, c, side = r["grid"], r["latent_channels"], r["size"]
        latent = float_array(latent, f"{self.tok.family} latent")
        if latent.ndim == 3:
            latent = latent[None]
        if latent.ndim != 4 or latent.shape[1:] != (g, g, c):
            raise InputError(f"{self.tok.family} latents are laid out (B, {g}, {g}, {c}); got {tuple(latent.shape)}")
        shape = (latent.shape[0], r["channels"], side, side)
        if noise is None:
            noise = rng_of(rng).standard_normal(shape, dtype=np.float32)
        else:
            noise = float_array(noise, "noise")
            if noise.shape != shape:
                raise InputError(
                    f"decoder noise must be laid out like the padded image {shape}; got {tuple(noise.shape)}"
                )
        cond = self.run("condition", latent)
        scale = float(options["cfg_scale"]) if options.get("cfg_scale") is not None else float(flow["cfg_scale"])
        null = np.zeros_like(cond) if scale != 1.0 else None
        x = sample(
            lambda x, t: self.run("velocity", x, t, cond),
            noise,
            time_grid(int(steps or flow["steps"]), options.get("schedule") or flow["schedule"]),
            options.get("solver") or flow["solver"],
            cfg_scale=scale,
            uncond=(lambda x, t: self.run("velocity", x, t, null)) if null is not None else None,
            cfg_interval=options.get("cfg_interval"),
        )
        out_scale = np.asarray(r["output_scale"], dtype=np.float32).reshape(1, -1, 1, 1)
        shift = np.asarray(r["output_shift"], dtype=np.float32).reshape(1, -1, 1, 1)
        image = x * out_scale + shift
        size = _sizes(tk.original_size if tk is not None else None, image.shape[0])
        return image[..., : size[0], : size[1]] if size else image


class ImageVideo(Handler):
    """Images (B, C, H, W) and videos (B, C, T, H, W) <-> ids (B, h, w) / (B, t, h, w), padded and cropped."""

    def _pad(self, video: np.ndarray) -> np.ndarray:
        r = self.recipe
        frames, height, width = video.shape[2:]
        tp, m = r["temporal_patch"], r["spatial_multiple"]
        pad_t = 1 + -(-max(frames - 1, 0) // tp) * tp - frames
        widths = ((0, 0), (0, 0), (0, pad_t), (0, -height % m), (0, -width % m))
        return np.pad(video, widths, mode="edge" if r["pad_mode"] == "replicate" else "constant")

    def encode(self, x: Any, **options: Any) -> NumpyTokens:
        self.reject_unknown(options, (), "encode")
        if isinstance(x, list | tuple):
            if not x:
                raise InputError("the video has 0 frames (an empty list); pass at least one (C, H, W) frame")
            frames = [np.asarray(f) for f in x]
            if len({f.shape for f in frames}) > 1 or frames[0].ndim != 3:
                raise InputError(
                    "a list input is read as video frames: each item must be a (C, H, W) array of one size"
                )
            x = np.stack(frames, axis=1)[None]
        arr = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)
        image = arr.ndim in (3, 4)
        arr = canonical(arr, "image" if image else "video", self.spec.channels)
        video = arr[:, :, None] if image else arr
        batch, _, frames_in, height, width = video.shape
        padded = self._pad(video)
        ids = self.run("image_encoder", padded[:, :, 0]) if image else self.run("video_encoder", padded)
        ids = ids.astype(np.int64)
        size = [height, width] if image else [frames_in, height, width]
        return self.tok.make_tokens(
            ids, grid=tuple(int(s) for s in ids.shape[1:]), modality="image" if image else "video",
            original_size=np.tile(np.asarray([size], dtype=np.int64), (batch, 1)),
            meta={"padded_size": list(padded.shape[3 if image else 2 :]), "input_range": [-1.0, 1.0]},
        )

    def decode(self, tokens: Any, **options: Any) -> np.ndarray:
        self.reject_unknown(options, (), "decode")
        tk = self.tokens_of(tokens)
        ids = tk.ids if tk is not None else tokens
        if tk is not None and ids is None:
            raise InputError("these tokens hold no ids; OmniTokenizer decodes discrete ids only")
        ids = int_ids(ids, tuple(self.spec.codebook_sizes))
        if ids.ndim not in (3, 4):
            raise InputError(
                f"ids must be laid out (B, h, w) for an image or (B, t, h, w) for a video; got {tuple(ids.shape)}"
            )
        if tk is not None and tk.modality == "image" and ids.ndim != 3:
            raise InputError(f"image tokens must hold ids (B, h, w); got shape {tuple(ids.shape)}")
        ws = self.recipe.get("decode_window")
        if ws and (ids.shape[-2] % ws or ids.shape[-1] % ws):
            raise InputError(f"the decoder has {ws}x{ws} window blocks, so the id grid must be a multiple of {ws}")
        out = self.run("image_decoder" if ids.ndim == 3 else "video_decoder", ids)
        if tk is not None and tk.original_size is not None:
            sizes = np.asarray(tk.original_size).reshape(out.shape[0], -1)
            if bool((sizes != sizes[0]).any()):
                raise InputError(
                    "the batch items have different original sizes; decode them one at a time (tokens.item(i))"
                )
            size = [int(s) for s in sizes[0]]
            out = out[..., : size[0], : size[1]] if out.ndim == 4 else out[:, :, : size[0], : size[1], : size[2]]
        return out


class TensorCodec(Handler):
    """Any family without a recipe: the encoder on the canonical tensor, the decoder on ids or latents."""

    def encode(self, x: Any, **options: Any) -> NumpyTokens:
        self.reject_unknown(options, (), "encode")
        out = self.run("encoder", canonical(x, self.spec.modality, self.spec.channels))
        if self.spec.kind == "continuous":
            return self.tok.make_tokens(None, latent=out, grid=tuple(out.shape[1:-1]))
        multi = len(self.spec.codebook_sizes) > 1
        return self.tok.make_tokens(out.astype(np.int64), grid=tuple(out.shape[1 : out.ndim - int(multi)]))

    def decode(self, tokens: Any, **options: Any) -> np.ndarray:
        self.reject_unknown(options, (), "decode")
        if "decoder" not in self.tok.graphs:
            return super().decode(tokens)
        tk = self.tokens_of(tokens)
        data = (tk.ids if tk.ids is not None else tk.latent) if tk is not None else tokens
        return self.run("decoder", np.asarray(data))
