"""The scene-shard format (design §3): member names, ``dataset.json``, sample (de)serialisation.

One webdataset sample per scene, three tar members sharing the scene key:

- ``{key}.latents.safetensors``: ``shot_{i}`` ``[C, F, H, W]`` per shot (normalised VAE latents:
  scaled, or per channel for Wan);
- ``{key}.text.safetensors``: ``group_{g}`` ``[L_g, text_dim]`` valid text tokens (group 0 is
  the global prompt, group ``i + 1`` shot ``i``) and ``pooled`` ``[G, pooled_dim]`` (``[G, 0]``
  for an encoder without a pooled vector, ``pooled_dim`` 0: Wan's umT5);
- ``{key}.json``: prompts, cut flags, shapes, source;
- ``{key}.checksums.json``: ``{member extension: checksum}`` of the three members above
  (datasets whose ``dataset.json`` has ``member_checksums: "blocksum64-crc32"``; older ones lack
  it). The checksum (``member_checksum``) is the CRC-32 of the 64-bit sums of the member's
  512-byte blocks (and of its tail): one vectorised pass, about 5x cheaper than a CRC-32 of the
  bytes (``bench/sample_checks.py``). It catches any change inside one 8-byte word, random
  corruption spread over words (undetected with probability ~2^-64 per block), truncation and
  blocks (disk sectors: tar data is 512-aligned) moved, lost or zeroed; it does not catch 8-byte
  words permuted inside one 512-byte block.

A dataset directory holds ``shards/*.tar``, ``dataset.json`` and ``empty_prompt.safetensors``.
Decoding validates everything and raises :class:`BadSampleError` naming shard and key: a member
whose checksum differs, and a latent value beyond ``max_latent_abs`` (finite garbage such as
3e38 that a NaN check lets through) make a sample bad like a missing member or a wrong shape.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load, save

from lct_train.core.files import write_atomic

FORMAT_VERSION = 1
# SPEC §1: an authentic cut is this literal prefix on the shot prompt.
SHOT_CUT = "[SHOT CUT] "
_CUT_MARK = SHOT_CUT.rstrip()
LATENTS_EXT = "latents.safetensors"
TEXT_EXT = "text.safetensors"
META_EXT = "json"
SAMPLE_EXTS = (LATENTS_EXT, TEXT_EXT, META_EXT)
CHECKSUM_EXT = "checksums.json"
CHECKSUM_KIND = "blocksum64-crc32"
CHECKSUM_BLOCK = 512
# Scaled VAE latents are about unit scale; a value beyond this is corrupt data (0 disables).
DEFAULT_MAX_LATENT_ABS = 1.0e3
DATASET_FILE = "dataset.json"
EMPTY_PROMPT_FILE = "empty_prompt.safetensors"
SHARDS_DIR = "shards"
SHARD_SUFFIX = ".tar"


def strip_cut(text: str) -> str:
    """``text`` without a leading cut marker (also ``"[SHOT CUT]"`` with other spacing)."""
    if text.startswith(_CUT_MARK):
        return text[len(_CUT_MARK):].lstrip()
    return text


def shot_prompt(text: str, cut: bool) -> str:
    """The shot prompt as trained on: the marker for an authentic cut, none for a continuation.

    Never doubles the marker: a ``text`` that already starts with it is normalised first.
    """
    text = strip_cut(text)
    return SHOT_CUT + text if cut else text


class BadSampleError(ValueError):
    """A sample that cannot be used; carries the shard and key so it can be found."""

    def __init__(self, shard: str, key: str, reason: str):
        super().__init__(f"bad sample: shard={shard} key={key}: {reason}")
        self.shard, self.key, self.reason = shard, key, reason


# dataset.json fields that every source of one run and the model config must agree on
GEOMETRY_KEYS = ("latent_channels", "text_dim", "pooled_dim")


@dataclass
class DatasetInfo:
    """Contents of ``dataset.json``: the encoders used and the tensor geometry they give."""

    vae: dict
    text_encoder: dict
    latent_channels: int
    text_dim: int
    pooled_dim: int
    temporal_factor: int
    spatial_factor: int
    image_frame: str  # which latent frames are valid image latents: "first" or "any"
    fps: float
    area: int
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)
    # CHECKSUM_KIND: every sample carries a {key}.checksums.json member (required); "": none
    member_checksums: str = ""

    def write(self, root: str | Path) -> None:
        write_atomic(Path(root) / DATASET_FILE, json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, root: str | Path) -> DatasetInfo:
        path = Path(root) / DATASET_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: not a dataset directory written by lct-shards build")
        data = json.loads(path.read_text())
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: format_version {data.get('format_version')} != {FORMAT_VERSION}")
        return cls(**data)


@dataclass
class SceneRecord:
    """A decoded scene: per-shot latents, per-group text tokens, pooled, metadata."""

    key: str
    shard: str
    latents: list[torch.Tensor]  # n shots, each [C, F, H, W]
    text: list[torch.Tensor]  # n + 1 groups, each [L_g, text_dim]
    pooled: torch.Tensor  # [n + 1, pooled_dim]
    meta: dict


def save_empty_prompt(root: str | Path, tokens: torch.Tensor, pooled: torch.Tensor) -> None:
    """Writes the empty-prompt embedding (``tokens [L, D]``, ``pooled [Dp]``) used for dropout."""
    write_atomic(Path(root) / EMPTY_PROMPT_FILE,
                 save({"tokens": tokens.contiguous(), "pooled": pooled.contiguous()}))


def load_empty_prompt(root: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    path = Path(root) / EMPTY_PROMPT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: needed for prompt dropout")
    data = load(path.read_bytes())
    return data["tokens"], data["pooled"]


def encode_scene(
    key: str,
    latents: list[torch.Tensor],
    text: list[torch.Tensor],
    pooled: torch.Tensor,
    meta: dict,
) -> dict[str, object]:
    """A webdataset sample dict (``__key__`` + bytes per member) for one scene."""
    if len(text) != len(latents) + 1 or pooled.shape[0] != len(text):
        raise ValueError(f"scene {key}: need n+1 text groups and pooled rows for n={len(latents)} shots")
    meta = dict(meta)
    meta.update(
        key=key,
        num_shots=len(latents),
        shapes=[list(z.shape) for z in latents],
        text_lens=[int(t.shape[0]) for t in text],
    )
    lat = {f"shot_{i}": z.contiguous() for i, z in enumerate(latents)}
    txt = {f"group_{g}": t.contiguous() for g, t in enumerate(text)}
    txt["pooled"] = pooled.contiguous()
    members = {LATENTS_EXT: save(lat), TEXT_EXT: save(txt), META_EXT: json.dumps(meta).encode()}
    sums = {ext: member_checksum(data) for ext, data in members.items()}
    return {"__key__": key, **members, CHECKSUM_EXT: json.dumps(sums).encode()}


def member_checksum(data: bytes) -> str:
    """``CHECKSUM_KIND`` of one member: CRC-32 of its 512-byte blocks' uint64 sums (mod 2^64,
    little-endian), continued over the bytes of the last partial block; 8 hex digits."""
    whole = len(data) // CHECKSUM_BLOCK * CHECKSUM_BLOCK
    words = np.frombuffer(data, dtype="<u8", count=whole // 8).reshape(-1, CHECKSUM_BLOCK // 8)
    sums = words.sum(axis=1, dtype=np.uint64).astype("<u8")
    return f"{zlib.crc32(data[whole:], zlib.crc32(sums.tobytes())):08x}"


def check_members(members: dict[str, bytes], shard: str, key: str, required: bool) -> None:
    """Compares each member with its recorded checksum; ``BadSampleError`` on a mismatch, or when
    ``required`` and the checksum member is missing or unreadable."""
    raw = members.get(CHECKSUM_EXT)
    if raw is None:
        if required:
            raise BadSampleError(shard, key, f"missing member {CHECKSUM_EXT} (the dataset "
                                 "records member checksums)")
        return
    try:
        sums = json.loads(raw)
        expected = {ext: sums[ext] for ext in SAMPLE_EXTS}
    except (ValueError, KeyError, TypeError) as exc:
        raise BadSampleError(shard, key, f"unreadable {CHECKSUM_EXT}: {exc!r}") from None
    for ext, want in expected.items():
        got = member_checksum(members[ext])
        if got != want:
            raise BadSampleError(shard, key, f"member {ext} has checksum {got}, {want} was "
                                 "written (corrupt)")


def _bounded(shard: str, key: str, name: str, t: torch.Tensor, bound: float) -> None:
    """NaN/inf and ``|value| > bound`` in one pass (``aminmax``; a NaN fails the comparison)."""
    low, high = torch.aminmax(t)
    peak = max(-float(low), float(high))
    if not peak <= bound:
        what = "NaN/inf values" if not math.isfinite(peak) else f"a value of magnitude {peak:.3g}"
        raise BadSampleError(shard, key, f"{name} has {what} (data.max_latent_abs={bound:g})")


def _finite(shard: str, key: str, name: str, t: torch.Tensor) -> None:
    # one cheap reduction first; the exact elementwise check only when the sum is not finite
    if t.is_floating_point() and not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
        raise BadSampleError(shard, key, f"{name} has NaN/inf values")


def decode_scene(members: dict[str, bytes], shard: str, key: str, info: DatasetInfo,
                 max_latent_abs: float = DEFAULT_MAX_LATENT_ABS) -> SceneRecord:
    """Parses and validates the members of one scene; raises :class:`BadSampleError`.

    ``max_latent_abs`` bounds every latent value (``<= 0``: only NaN/inf are refused).
    """
    missing = [ext for ext in SAMPLE_EXTS if ext not in members]
    if missing:
        raise BadSampleError(shard, key, f"missing members {missing} (has {sorted(members)})")
    check_members(members, shard, key, required=info.member_checksums == CHECKSUM_KIND)
    try:
        meta = json.loads(members[META_EXT])
        lat = load(members[LATENTS_EXT])
        txt = load(members[TEXT_EXT])
    except Exception as exc:  # any parse failure is a bad sample, never a crash
        raise BadSampleError(shard, key, f"cannot parse: {type(exc).__name__}: {exc}") from None
    n = meta.get("num_shots")
    if not isinstance(n, int) or n < 1:
        raise BadSampleError(shard, key, f"json num_shots={n!r} is not a positive int")
    latents, text = [], []
    for i in range(n):
        z = lat.get(f"shot_{i}")
        if z is None:
            raise BadSampleError(shard, key, f"latents lack shot_{i}")
        if z.dim() != 4 or z.shape[0] != info.latent_channels or min(z.shape) < 1:
            raise BadSampleError(shard, key, f"shot_{i} shape {tuple(z.shape)} is not [{info.latent_channels},F,H,W]")
        if max_latent_abs > 0:
            _bounded(shard, key, f"shot_{i}", z, max_latent_abs)
        else:
            _finite(shard, key, f"shot_{i}", z)
        latents.append(z.float())
    for g in range(n + 1):
        t = txt.get(f"group_{g}")
        if t is None:
            raise BadSampleError(shard, key, f"text lacks group_{g}")
        if t.dim() != 2 or t.shape[1] != info.text_dim or t.shape[0] < 1:
            raise BadSampleError(shard, key, f"group_{g} shape {tuple(t.shape)} is not [L>0,{info.text_dim}]")
        _finite(shard, key, f"group_{g}", t)
        text.append(t.float())
    pooled = txt.get("pooled")
    if pooled is None or tuple(pooled.shape) != (n + 1, info.pooled_dim):
        got = None if pooled is None else tuple(pooled.shape)
        raise BadSampleError(shard, key, f"pooled shape {got} is not ({n + 1}, {info.pooled_dim})")
    _finite(shard, key, "pooled", pooled)
    return SceneRecord(key, shard, latents, text, pooled.float(), meta)

