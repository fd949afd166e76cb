"""Video codecs ("VAEs"): frames <-> latents, used by shard building and by the sampler.

Convention: ``frames`` are float ``[T, 3, H, W]`` in ``[-1, 1]``; ``latents`` are ``[C, F, h, w]``
already multiplied by the scaling factor (what the shards store and the model sees).
``encode(frames)`` encodes one shot; ``encode_batch(shots)`` encodes shots of one shape in one
call (a list of ``[T, 3, H, W]`` or ``[B, T, 3, H, W]``) and returns one latent per shot.

- :class:`PixelCodec`: space-to-depth of the frames themselves (factor 2 -> 12 channels),
  temporal factor 1, exactly invertible: generated latents decode to recognisable frames.
- :class:`HunyuanVideoCodec`: a diffusers ``AutoencoderKLHunyuanVideo`` from a local path, or
  tiny random weights built from config (tests, offline). A VAE loaded from a path runs with
  diffusers' spatial tiling on (``enable_tiling``: 256-pixel tiles, stride 192) besides its
  temporal tiling (16 frames, stride 12, always on), as diffusers' HunyuanVideo examples do: a
  480p shot then never holds the whole frame's activations at once.

``build_codec(spec)`` rebuilds a codec from the ``spec()`` dict stored in ``dataset.json``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange

RGB = 3
CODEC_HELP = ("pixel[:F] (space-to-depth, factor F) | tiny-hunyuan (random, tests) | hunyuan:PATH "
              "(a diffusers AutoencoderKLHunyuanVideo folder, e.g. a pipeline's vae/; spatial and "
              "temporal tiling on)")
TINY_HUNYUAN_SEED = 0
TINY_HUNYUAN_CONFIG = dict(
    latent_channels=4, block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4,
    spatial_compression_ratio=8, temporal_compression_ratio=4,
)


def frames_to_tensor(frames_uint8: torch.Tensor) -> torch.Tensor:
    """``uint8 [..., T, H, W, 3]`` -> float ``[..., T, 3, H, W]`` in ``[-1, 1]``."""
    return frames_uint8.movedim(-1, -3).float().div(127.5).sub(1.0)


def tensor_to_frames(frames: torch.Tensor) -> torch.Tensor:
    """float ``[T, 3, H, W]`` in ``[-1, 1]`` -> ``uint8 [T, H, W, 3]``."""
    return frames.clamp(-1, 1).add(1.0).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1)


def stack_shots(shots: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Shots of one shape (a list of ``[T, 3, H, W]``, or ``[B, T, 3, H, W]``) -> ``[B, T, 3, H, W]``."""
    if isinstance(shots, torch.Tensor):
        if shots.dim() != 5:
            raise ValueError(f"encode_batch: need [B, T, 3, H, W] shots, got shape {tuple(shots.shape)}")
        return shots
    shapes = sorted({tuple(x.shape) for x in shots})
    if len(shapes) != 1:
        raise ValueError(f"encode_batch: shots of one shape [T, 3, H, W] per call, got {shapes or 'none'}")
    return torch.stack(list(shots))


class PixelCodec:
    """Latents are the frames, space-to-depth rearranged: ``[3*f*f, T, H/f, W/f]``."""

    temporal_factor = 1
    image_frame = "any"
    scaling_factor = 1.0

    def __init__(self, factor: int = 2):
        if factor < 1:
            raise ValueError(f"PixelCodec: factor must be >= 1, got {factor}")
        self.spatial_factor = factor
        self.latent_channels = RGB * factor * factor

    def spec(self) -> dict:
        return {"kind": "pixel", "factor": self.spatial_factor}

    def valid_frames(self, n: int) -> int:
        return n

    def latent_frames(self, n: int) -> int:
        """Latent frames of ``n`` pixel frames (``n`` a ``valid_frames`` length)."""
        return n

    def pixel_frames(self, f: int) -> int:
        """Pixel frames that ``f`` latent frames decode to (inverse of ``latent_frames``)."""
        return f

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return self.encode_batch(frames[None])[0]

    @torch.no_grad()
    def encode_batch(self, shots: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        f = self.spatial_factor
        z = rearrange(stack_shots(shots).float(), "b t c (h p) (w q) -> b (c p q) t h w", p=f, q=f)
        return list(z.unbind(0))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        f = self.spatial_factor
        return rearrange(latents.float(), "(c p q) t h w -> t c (h p) (w q)", p=f, q=f)


class HunyuanVideoCodec:
    """A diffusers ``AutoencoderKLHunyuanVideo`` (causal: latent frame 0 is the image latent)."""

    image_frame = "first"

    def __init__(self, path: str | None = None, *, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 sample: bool = False, tiling: bool | None = None):
        from diffusers import AutoencoderKLHunyuanVideo

        if path is None:
            torch.manual_seed(TINY_HUNYUAN_SEED)
            self.vae = AutoencoderKLHunyuanVideo(**TINY_HUNYUAN_CONFIG)
            if dtype != torch.float32:  # built in fp32
                self.vae = self.vae.to(dtype)
        else:
            self.vae = AutoencoderKLHunyuanVideo.from_pretrained(path, torch_dtype=dtype, local_files_only=True)
        self.path, self.sample = path, sample
        self.tiling = path is not None if tiling is None else tiling  # on for a real VAE
        if self.tiling:
            self.vae.enable_tiling()
        self.vae = self.vae.to(device).eval()
        cfg = self.vae.config
        self.latent_channels = int(cfg.latent_channels)
        self.temporal_factor = int(cfg.temporal_compression_ratio)
        self.spatial_factor = int(cfg.spatial_compression_ratio)
        self.scaling_factor = float(cfg.scaling_factor)

    def spec(self) -> dict:
        return {"kind": "hunyuan", "path": self.path, "tiling": self.tiling}

    def valid_frames(self, n: int) -> int:
        """Largest ``1 + k * temporal_factor`` not above ``n``."""
        return 1 + (n - 1) // self.temporal_factor * self.temporal_factor

    def latent_frames(self, n: int) -> int:
        """Latent frames of ``n`` pixel frames (``n`` a ``valid_frames`` length): the first
        frame alone, then one latent frame per ``temporal_factor`` frames."""
        return (n - 1) // self.temporal_factor + 1

    def pixel_frames(self, f: int) -> int:
        """Pixel frames that ``f`` latent frames decode to (inverse of ``latent_frames``)."""
        return (f - 1) * self.temporal_factor + 1

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return self.encode_batch(frames[None])[0]

    @torch.no_grad()
    def encode_batch(self, shots: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """One VAE call, the shots along its batch dimension ``[B, C, T, H, W]``."""
        p = next(self.vae.parameters())
        x = rearrange(stack_shots(shots), "b t c h w -> b c t h w").to(p.device, p.dtype)
        dist = self.vae.encode(x).latent_dist
        z = dist.sample() if self.sample else dist.mode()
        return list((z * self.scaling_factor).float().cpu().unbind(0))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        p = next(self.vae.parameters())
        z = (latents / self.scaling_factor).unsqueeze(0).to(p.device, p.dtype)
        x = self.vae.decode(z).sample
        return rearrange(x[0].float().cpu(), "c t h w -> t c h w")


def build_codec(spec: dict | str, **kwargs) -> PixelCodec | HunyuanVideoCodec:
    """From a ``spec()`` dict or a CLI string: ``pixel[:F]``, ``tiny-hunyuan``, ``hunyuan:PATH``."""
    if isinstance(spec, str):
        kind, _, arg = spec.partition(":")
        spec = {"kind": kind}
        if kind == "pixel" and arg:
            spec["factor"] = int(arg)
        if kind == "hunyuan":
            spec["path"] = arg or None
        if kind == "tiny-hunyuan":
            spec = {"kind": "hunyuan", "path": None}
    kind = spec.get("kind")
    if kind == "pixel":
        return PixelCodec(int(spec.get("factor", 2)))  # exact: no device or dtype
    if kind == "hunyuan":
        if "tiling" in spec:
            kwargs.setdefault("tiling", spec["tiling"])
        return HunyuanVideoCodec(spec.get("path"), **kwargs)
    raise ValueError(f"unknown codec {spec!r}: use pixel[:F], tiny-hunyuan or hunyuan:PATH")
