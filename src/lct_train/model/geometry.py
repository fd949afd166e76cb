"""Scene geometry, one function each: latent -> patch grid, a scene's `SceneSpec` (and so its token
count, `SceneSpec.num_tokens`), and `patchify` / `unpatchify` of one latent.

Latents are ``[C, F, H, W]``; a patch grid is ``(F/pt, H/ph, W/pw)``; tokens are in (f, y, x)
order with vectors (c, pt, ph, pw), the order of the patch embedding's Conv3d weight.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lct_train.model.layout import GroupSpec, SceneSpec

Triple = tuple[int, int, int]


def patch_grid(latent_shape: Sequence[int], patch: Sequence[int]) -> Triple:
    """``(F', H', W')`` of a ``[C, F, H, W]`` latent; ``ValueError`` if it is not 4-d or the
    patch does not divide it."""
    if len(latent_shape) != 4:
        raise ValueError(f"latent must be [C, F, H, W], got shape {tuple(latent_shape)}")
    fhw = tuple(int(d) for d in latent_shape[1:])
    if any(d % p for d, p in zip(fhw, patch)):
        raise ValueError(f"latent (F, H, W)={fhw} is not divisible by the patch size "
                         f"{tuple(patch)}")
    return tuple(d // p for d, p in zip(fhw, patch))  # type: ignore[return-value]


def scene_spec(
    text_lens: Sequence[int],
    latent_shapes: Sequence[Sequence[int]],
    patch: Sequence[int],
    dummy_grid: Sequence[int],
) -> SceneSpec:
    """The `SceneSpec` of a scene with a global group: ``text_lens`` = global group first, then
    one per shot; ``latent_shapes`` = one ``[C, F, H, W]`` per shot."""
    if len(text_lens) != len(latent_shapes) + 1:
        raise ValueError(f"scene_spec: {len(text_lens)} text lengths for {len(latent_shapes)} "
                         "shots (want one per shot plus the global group)")
    groups = [GroupSpec(int(text_lens[0]), tuple(int(d) for d in dummy_grid), is_global=True)]
    groups += [GroupSpec(int(n), patch_grid(s, patch)) for n, s in zip(text_lens[1:], latent_shapes)]
    return SceneSpec(tuple(groups))


def patchify(
    latent: torch.Tensor, patch: Sequence[int], out: torch.Tensor | None = None
) -> torch.Tensor:
    """``[C, F, H, W] -> [F'H'W', C*pt*ph*pw]``; with ``out`` (rows of a packed batch) the tokens
    are written into it with a single copy and ``out`` is returned."""
    try:
        f, h, w = patch_grid(latent.shape, patch)
    except ValueError as err:
        raise ValueError(f"patchify: {err}") from None
    c = latent.shape[0]
    pt, ph, pw = patch
    x = latent.reshape(c, f, pt, h, ph, w, pw).permute(1, 3, 5, 0, 2, 4, 6)
    if out is None:
        return x.reshape(f * h * w, c * pt * ph * pw)
    out.view(f, h, w, c, pt, ph, pw).copy_(x)
    return out


def unpatchify(
    tokens: torch.Tensor, grid: Sequence[int], patch: Sequence[int], channels: int
) -> torch.Tensor:
    """Inverse of `patchify`: ``[F'H'W', C*pt*ph*pw] -> [C, F, H, W]``."""
    f, h, w = grid
    pt, ph, pw = patch
    expected = (f * h * w, channels * pt * ph * pw)
    if tuple(tokens.shape) != expected:
        raise ValueError(
            f"unpatchify: tokens must have shape {expected}, got {tuple(tokens.shape)}"
        )
    x = tokens.reshape(f, h, w, channels, pt, ph, pw).permute(3, 0, 4, 1, 5, 2, 6)
    return x.reshape(channels, f * pt, h * ph, w * pw)
