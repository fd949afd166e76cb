"""Video codecs ("VAEs"): frames <-> latents, used by shard building and by the sampler.

Convention: ``frames`` are float ``[T, 3, H, W]`` in ``[-1, 1]``; ``latents`` are ``[C, F, h, w]``
already normalised as the source model expects them (HunyuanVideo: times the scaling factor;
Wan: per channel by the VAE's mean / std): what the shards store and the model sees.
``encode(frames)`` encodes one shot; ``encode_batch(shots)`` encodes shots of one shape in one
call (a list of ``[T, 3, H, W]`` or ``[B, T, 3, H, W]``) and returns one latent per shot.

- :class:`PixelCodec`: space-to-depth of the frames themselves (factor 2 -> 12 channels),
  temporal factor 1, exactly invertible: generated latents decode to recognisable frames.
- :class:`HunyuanVideoCodec`: a diffusers ``AutoencoderKLHunyuanVideo`` from a local path, or
  tiny random weights built from config (tests, offline). A VAE loaded from a path runs with
  diffusers' spatial tiling on (``enable_tiling``: 256-pixel tiles, stride 192) besides its
  temporal tiling (16 frames, stride 12, always on), as diffusers' HunyuanVideo examples do: a
  480p shot then never holds the whole frame's activations at once.
- :class:`WanCodec`: a diffusers ``AutoencoderKLWan`` (Wan2.1's or Wan2.2's) from a local path
  or tiny random weights of either layout; tiled like the HunyuanVideo one when loaded from a path.

``build_codec(spec)`` rebuilds a codec from the ``spec()`` dict stored in ``dataset.json``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange

RGB = 3
CODEC_HELP = ("pixel[:F] (space-to-depth, factor F) | tiny-hunyuan (random, tests) | hunyuan:PATH "
              "(a diffusers AutoencoderKLHunyuanVideo folder, e.g. a pipeline's vae/; spatial and "
              "temporal tiling on) | tiny-wan, tiny-wan2.2 (random 16- / 48-channel Wan VAEs, tests) | "
              "wan:PATH (a diffusers AutoencoderKLWan folder: Wan2.1's 16-channel 4x8x8 or Wan2.2 "
              "TI2V-5B's 48-channel 4x16x16; latents normalised per channel by its latents_mean / "
              "latents_std; spatial tiling on)")
TINY_HUNYUAN_SEED = 0
TINY_HUNYUAN_CONFIG = dict(
    latent_channels=4, block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4,
    spatial_compression_ratio=8, temporal_compression_ratio=4,
)
TINY_WAN_SEED = 0
_TINY_WAN = dict(base_dim=8, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
TINY_WAN_CONFIGS = {  # the layouts of Wan2.1's and Wan2.2 TI2V-5B's VAEs, tiny widths
    "2.1": dict(_TINY_WAN, z_dim=16, latents_mean=[round(0.1 * i - 0.8, 2) for i in range(16)],
                latents_std=[round(1.0 + 0.1 * i, 2) for i in range(16)]),
    "2.2": dict(_TINY_WAN, decoder_base_dim=12, z_dim=48, is_residual=True, in_channels=12, out_channels=12,
                patch_size=2, scale_factor_spatial=16,
                latents_mean=[round(0.02 * i - 0.5, 2) for i in range(48)],
                latents_std=[round(0.5 + 0.05 * i, 2) for i in range(48)]),
}


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


class DiffusersVideoCodec:
    """A diffusers causal video VAE (latent frame 0 is the image latent): encode = the posterior's
    mode (or a sample), then ``normalize``; decode = ``denormalize``, then the VAE's decoder.
    Subclasses build ``self.vae`` and say how latents are normalised."""

    image_frame = "first"
    kind = ""

    def _setup(self, vae, path: str | None, *, device: str, dtype: torch.dtype, sample: bool,
               tiling: bool | None) -> None:
        if path is None and dtype != torch.float32:  # tiny random weights are built in fp32
            vae = vae.to(dtype)
        self.vae, self.path, self.sample = vae, path, sample
        self.tiling = path is not None if tiling is None else tiling  # on for a real VAE
        if self.tiling:
            self.vae.enable_tiling()
        self.vae = self.vae.to(device).eval()

    def spec(self) -> dict:
        return {"kind": self.kind, "path": self.path, "tiling": self.tiling}

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

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
        return list(self.normalize(z).float().cpu().unbind(0))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        p = next(self.vae.parameters())
        z = self.denormalize(latents.unsqueeze(0).to(p.device, p.dtype))
        x = self.vae.decode(z).sample
        return rearrange(x[0].float().cpu(), "c t h w -> t c h w")


class HunyuanVideoCodec(DiffusersVideoCodec):
    """A diffusers ``AutoencoderKLHunyuanVideo``; latents scaled by the config's ``scaling_factor``."""

    kind = "hunyuan"

    def __init__(self, path: str | None = None, *, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 sample: bool = False, tiling: bool | None = None):
        from diffusers import AutoencoderKLHunyuanVideo

        if path is None:
            torch.manual_seed(TINY_HUNYUAN_SEED)
            vae = AutoencoderKLHunyuanVideo(**TINY_HUNYUAN_CONFIG)
        else:
            vae = AutoencoderKLHunyuanVideo.from_pretrained(path, torch_dtype=dtype, local_files_only=True)
        self._setup(vae, path, device=device, dtype=dtype, sample=sample, tiling=tiling)
        cfg = self.vae.config
        self.latent_channels = int(cfg.latent_channels)
        self.temporal_factor = int(cfg.temporal_compression_ratio)
        self.spatial_factor = int(cfg.spatial_compression_ratio)
        self.scaling_factor = float(cfg.scaling_factor)

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.scaling_factor

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.scaling_factor


class WanCodec(DiffusersVideoCodec):
    """A diffusers ``AutoencoderKLWan`` (Wan2.1: 16 channels, 4x8x8; Wan2.2 TI2V-5B: 48 channels,
    4x16x16, ``is_residual`` with a 2x2 patchify inside). Latents are normalised per channel
    with the config's ``latents_mean`` / ``latents_std`` as diffusers' Wan pipelines do:
    ``(z - mean) * (1 / std)`` on encode (in fp32), ``z / (1 / std) + mean`` before the decoder
    (in the VAE's dtype, exactly ``WanPipeline``'s decode). ``scaling_factor`` is 1."""

    kind = "wan"
    scaling_factor = 1.0

    def __init__(self, path: str | None = None, *, variant: str = "2.1", device: str = "cpu",
                 dtype: torch.dtype = torch.float32, sample: bool = False, tiling: bool | None = None):
        from diffusers import AutoencoderKLWan

        if path is None:
            if variant not in TINY_WAN_CONFIGS:
                raise ValueError(f"tiny Wan VAE variant must be one of {sorted(TINY_WAN_CONFIGS)}, got {variant!r}")
            torch.manual_seed(TINY_WAN_SEED)
            vae = AutoencoderKLWan(**TINY_WAN_CONFIGS[variant])
        else:
            vae = AutoencoderKLWan.from_pretrained(path, torch_dtype=dtype, local_files_only=True)
        self.variant = variant if path is None else None
        self._setup(vae, path, device=device, dtype=dtype, sample=sample, tiling=tiling)
        cfg = self.vae.config
        self.latent_channels = int(cfg.z_dim)
        self.temporal_factor = int(cfg.scale_factor_temporal)
        self.spatial_factor = int(cfg.scale_factor_spatial)
        for key in ("latents_mean", "latents_std"):
            if len(getattr(cfg, key)) != self.latent_channels:
                raise ValueError(f"{path}: AutoencoderKLWan config has {len(getattr(cfg, key))} {key} "
                                 f"for z_dim {self.latent_channels}")
        self._mean = torch.tensor(cfg.latents_mean).view(-1, 1, 1, 1)
        self._std = torch.tensor(cfg.latents_std).view(-1, 1, 1, 1)

    def spec(self) -> dict:
        spec = super().spec()
        return spec if self.variant is None else dict(spec, variant=self.variant)

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        z = z.float()
        return (z - self._mean.to(z.device)) * (1.0 / self._std.to(z.device))

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._mean.to(z.device, z.dtype), self._std.to(z.device, z.dtype)
        return z / (1.0 / std) + mean


CODECS = {"pixel": PixelCodec, "hunyuan": HunyuanVideoCodec, "wan": WanCodec}
TINY_KINDS = {"tiny-hunyuan": {"kind": "hunyuan", "path": None},
              "tiny-wan": {"kind": "wan", "path": None, "variant": "2.1"},
              "tiny-wan2.2": {"kind": "wan", "path": None, "variant": "2.2"}}
# the model family (``model_cfg.family``) whose latents each kind (a spec's or a CLI one) gives:
# a source model's own VAE belongs to its family, a generic one (None) fits any (``encoder_family``)
CODEC_FAMILY = {"pixel": None, "hunyuan": "mmdit", "tiny-hunyuan": "mmdit",
                "wan": "wan", "tiny-wan": "wan", "tiny-wan2.2": "wan"}
CODEC_KINDS = "pixel[:F], tiny-hunyuan, hunyuan:PATH, tiny-wan, tiny-wan2.2 or wan:PATH"


def build_codec(spec: dict | str, **kwargs) -> PixelCodec | DiffusersVideoCodec:
    """From a ``spec()`` dict or a CLI string (``CODEC_KINDS``)."""
    if isinstance(spec, str):
        kind, _, arg = spec.partition(":")
        spec = dict(TINY_KINDS.get(kind, {"kind": kind}))
        if kind == "pixel" and arg:
            spec["factor"] = int(arg)
        if kind in ("hunyuan", "wan"):
            spec["path"] = arg or None
    kind = spec.get("kind")
    if kind == "pixel":
        return PixelCodec(int(spec.get("factor", 2)))  # exact: no device or dtype
    if kind in CODECS:
        if "tiling" in spec:
            kwargs.setdefault("tiling", spec["tiling"])
        if "variant" in spec:
            kwargs.setdefault("variant", spec["variant"])
        return CODECS[kind](spec.get("path"), **kwargs)
    raise ValueError(f"unknown codec {spec!r}: use {CODEC_KINDS}")
