"""Batch metadata of packed Wan scenes: `SceneSpec` -> `WanMeta`, built once per batch (SPEC §9).

On the Wan family text never enters self-attention, so the model keeps two sequences:

- the **video stream** `[V_1 V_2 ... V_n]` of every scene's shots, in group order. Its self-
  attention mask is SPEC §4's (bidirectional / context-causal / isolated over groups, scenes
  apart), built by the MMDiT layout's interval helper on video rows only;
- the **cross-attention windows**: shot i's video queries attend to one window of `text_len`
  keys = the global prompt's valid tokens, then shot i's own, then zero rows up to `text_len`
  (the source model zero-pads one prompt to 512 and attends to the padding without a mask).
  `window_index` gathers each window from the text rows `[cached text | new text | zero row]`.

A global group has no video tokens here (grid `GLOBAL_GRID`) and takes no RoPE positions.
Video token (f, y, x) of a shot starting at s gets (s + f, y, x) with s advancing by F + gap per
shot (`rope_offsets="temporal"`), or (s + f, s + y, s + x) advancing by max(F, H, W)
(`"diagonal"`, SPEC §3 without text). The first shot starts at 0: a one-shot scene has Wan's
own coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lct_train.model.layout import (
    INDEX_DTYPE,
    MASKS,
    AttnIntervals,
    GroupSpec,
    SceneSpec,
    _intervals,
)
from lct_train.model.transfer import move_meta

GLOBAL_GRID = (0, 0, 0)  # the global group of a Wan scene: text only


@dataclass
class WanMeta:
    """All metadata of one packed Wan micro-batch. G = groups, Nv = video tokens, S = shots."""

    specs: tuple[SceneSpec, ...]
    mask: str
    text_len: int  # window length (the source model's prompt length)
    num_text: int  # Nt: valid text rows of this batch's groups
    num_video: int  # Nv
    group_text_len: tuple[int, ...]  # host, [G]
    group_video_len: tuple[int, ...]
    video_group: torch.Tensor  # [Nv] group index 0..G-1
    rope_coords: torch.Tensor  # [Nv, 3]
    attn: AttnIntervals  # video self-attention (keys: cached video + new video)
    cross_attn: AttnIntervals  # video queries -> windows [S * text_len]
    window_index: torch.Tensor  # [S * text_len] rows of cat(cached text, text, zero row)
    num_shots: int
    shot_group: torch.Tensor  # [S]
    video_shot: torch.Tensor  # [Nv] shot index
    shot_video_cu: torch.Tensor  # [S + 1] shot offsets in the video stream
    cached_groups: int = 0  # KV cache: groups before this batch's groups (one scene)
    cached_video: int = 0
    cached_text: int = 0
    # Sequence parallelism: this rank's slice (`lct_train.parallel.wan_sp.shard_wan_meta`).
    # When set, the per-token fields (and num_video) cover the slice only; the text rows, the
    # intervals and the windows stay those of the whole batch.
    shard: object | None = None
    rope_offsets: str = "temporal"  # the RoPE settings the coordinates were built with
    shot_gap: int = 4

    @property
    def num_groups(self) -> int:
        return len(self.group_text_len)

    def to(self, device: torch.device | str) -> WanMeta:
        """Every tensor (the intervals' included) in one non-blocking copy (``transfer``)."""
        return move_meta(self, device, ("attn", "cross_attn"))


def wan_scene(shots, global_text: int | None = None) -> SceneSpec:
    """``wan_scene([(text_len, grid), ...], global_text=n)``: a scene, global group first."""
    groups = [GroupSpec(global_text, GLOBAL_GRID, is_global=True)] if global_text is not None else []
    return SceneSpec(tuple(groups) + tuple(GroupSpec(int(t), tuple(g)) for t, g in shots))


def _validate(specs: list[SceneSpec], cached: SceneSpec | None, text_len: int) -> None:
    if not specs:
        raise ValueError("build_wan_meta: specs is empty")
    for s, spec in enumerate(specs):
        if not spec.groups:
            raise ValueError(f"build_wan_meta: scene {s} has no groups")
        for g, group in enumerate(spec.groups):
            where = f"build_wan_meta: scene {s} group {g}"
            if group.text_len < 0:
                raise ValueError(f"{where}: text_len must be >= 0, got {group.text_len}")
            if group.is_global:
                if g > 0 or (cached is not None and cached.groups):
                    raise ValueError(f"{where}: the global group must be the scene's first group")
                if tuple(group.grid) != GLOBAL_GRID:
                    raise ValueError(f"{where}: a Wan global group has no video, grid must be "
                                     f"{GLOBAL_GRID}, got {group.grid}")
                if group.text_len > text_len:
                    raise ValueError(f"{where}: global prompt of {group.text_len} tokens is longer "
                                     f"than the model's text_len {text_len}")
            elif len(group.grid) != 3 or any(int(d) < 1 for d in group.grid):
                raise ValueError(f"{where}: grid must be 3 positive ints, got {group.grid}")


def _next_start(start: int, grid, rope_offsets: str, shot_gap: int) -> int:
    if rope_offsets == "diagonal":
        return start + max(grid)
    return start + grid[0] + shot_gap


def _video_coords(grid, start: int, rope_offsets: str) -> torch.Tensor:
    f, h, w = grid
    coords = torch.stack(
        torch.meshgrid(torch.arange(f), torch.arange(h), torch.arange(w), indexing="ij"), -1
    ).reshape(-1, 3)
    if rope_offsets == "diagonal":
        return coords + start
    return coords + torch.tensor([start, 0, 0])


def build_wan_meta(
    specs: list[SceneSpec] | tuple[SceneSpec, ...],
    *,
    text_len: int,
    mask: str = "bidirectional",
    shot_gap: int = 4,
    rope_offsets: str = "temporal",
    cached: SceneSpec | None = None,
    device: torch.device | str | None = None,
) -> WanMeta:
    """Builds the metadata of a packed batch of Wan scenes (module docstring).

    ``text_len``, ``shot_gap``, ``rope_offsets``: the model's settings (`WanConfig`).
    ``cached``: the groups already in a KV cache (one scene, causal mask only); ``specs`` is then
    the scene's *new* groups: positions continue after the cached shots, self-attention keys run
    over ``cached video + new video``, and windows read the cached global prompt.
    """
    specs = list(specs)
    if mask not in MASKS:
        raise ValueError(f"build_wan_meta: mask must be one of {MASKS}, got {mask!r}")
    if cached is not None:
        if mask != "causal":
            raise ValueError("build_wan_meta: a KV cache needs mask='causal'")
        if len(specs) != 1:
            raise ValueError(f"build_wan_meta: with cached=... pass one scene, got {len(specs)}")
    _validate(specs, cached, text_len)
    cached = cached or SceneSpec(())
    cached_video = sum(g.video_len for g in cached.groups)
    cached_text = sum(g.text_len for g in cached.groups)
    cached_global = cached.groups[0].text_len if cached.groups and cached.groups[0].is_global else 0
    start0 = 0
    for group in cached.groups:
        if not group.is_global:
            start0 = _next_start(start0, group.grid, rope_offsets, shot_gap)
    num_text = sum(g.text_len for s in specs for g in s.groups)
    num_video = sum(g.video_len for s in specs for g in s.groups)
    pad_row = cached_text + num_text  # the zero row after the text rows
    coords, windows, video_shot, shot_group, shot_sizes = [], [], [], [], []
    group_text_len, group_video_len = [], []
    run_bounds, scene_q, scene_k, cross_bounds = [], [], [], []
    t_off, v_off = cached_text, 0
    for s, spec in enumerate(specs):
        start, v_scene, groups = start0, v_off, []
        glob = torch.arange(0, cached_global)  # the global prompt's rows (cached or this batch)
        for gi, group in enumerate(spec.groups):
            g = len(group_text_len)
            lt, lv = group.text_len, group.video_len
            own = torch.arange(t_off, t_off + lt)
            group_text_len.append(lt)
            group_video_len.append(lv)
            if group.is_global:
                glob = own
            else:
                k = len(shot_group)
                size = len(glob) + lt
                if size > text_len:
                    raise ValueError(
                        f"build_wan_meta: scene {s} group {gi}: the "
                        f"cross-attention window has {size} text tokens (global {len(glob)} + "
                        f"own {lt}), more than the model's text_len {text_len}")
                windows.append(torch.cat([glob, own, torch.full((text_len - size,), pad_row)]))
                coords.append(_video_coords(group.grid, start, rope_offsets))
                start = _next_start(start, group.grid, rope_offsets, shot_gap)
                video_shot.append(torch.full((lv,), k))
                shot_group.append(g)
                shot_sizes.append(lv)
                q0 = v_off
                groups.append((q0, q0 + lv, cached_video + q0, cached_video + q0 + lv, False))
                cross_bounds.append(((q0, q0 + lv), (k * text_len, (k + 1) * text_len)))
            t_off, v_off = t_off + lt, v_off + lv
        if groups:  # a scene of the global group only has no video rows
            run_bounds.append(groups)
            scene_q.append((v_scene, v_off))
            scene_k.append((v_scene, cached_video + v_off))  # v_scene = 0 with a cache

    def cat(parts: list[torch.Tensor], width: tuple[int, ...] = ()) -> torch.Tensor:
        return torch.cat(parts).to(INDEX_DTYPE) if parts else torch.zeros((0, *width),
                                                                          dtype=INDEX_DTYPE)

    num_shots = len(shot_group)
    if mask == "isolated":  # no global video here: each shot is its own attention segment
        run_bounds = [[group] for groups in run_bounds for group in groups]
        scene_q, scene_k = [g[0][:2] for g in run_bounds], [g[0][2:4] for g in run_bounds]
        attn = _intervals(run_bounds, "bidirectional", num_video, num_video, scene_q, scene_k)
    else:
        attn = _intervals(run_bounds, mask, num_video, cached_video + num_video, scene_q, scene_k)
    cross_attn = _intervals(
        [[(*q, *k, False)] for q, k in cross_bounds], "bidirectional", num_video,
        num_shots * text_len, [q for q, _ in cross_bounds], [k for _, k in cross_bounds],
    )
    meta = WanMeta(
        specs=tuple(specs),
        mask=mask,
        text_len=text_len,
        num_text=num_text,
        num_video=num_video,
        group_text_len=tuple(group_text_len),
        group_video_len=tuple(group_video_len),
        video_group=torch.repeat_interleave(
            torch.arange(len(group_video_len)), torch.tensor(group_video_len, dtype=INDEX_DTYPE)
        ),
        rope_coords=cat(coords, (3,)),
        attn=attn,
        cross_attn=cross_attn,
        window_index=cat(windows),
        num_shots=num_shots,
        shot_group=torch.tensor(shot_group, dtype=INDEX_DTYPE),
        video_shot=cat(video_shot),
        shot_video_cu=torch.tensor([0, *shot_sizes], dtype=INDEX_DTYPE).cumsum(0),
        cached_groups=len(cached.groups),
        cached_video=cached_video,
        cached_text=cached_text,
        rope_offsets=rope_offsets,
        shot_gap=shot_gap,
    )
    return meta.to(device) if device is not None else meta
