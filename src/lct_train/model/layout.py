"""Token layout of packed scenes: `SceneSpec` -> `PackedMeta`, built once per batch (SPEC §2-§4).

A scene is `[T_G D_G] [T_1 V_1] ... [T_n V_n]` in *joint* (group) order. The model keeps a text
stream and a video stream; `PackedMeta` holds every index that maps between the streams and the
joint sequence, the RoPE coordinates (SPEC §3), and the per-row key intervals of the attention mask
(SPEC §4). Layers only consume it. Latent -> grid -> tokens lives in `model.geometry`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch

from lct_train.model.transfer import move_meta, to_device

# "isolated": the baseline without cross-shot attention (each shot sees its own group and the
# global group; the global group sees itself). Same parameters, only the mask differs.
MASKS = ("bidirectional", "causal", "isolated")
INDEX_DTYPE = torch.long
INTERVAL_DTYPE = torch.int32  # flash / varlen kernels take int32 offsets


@dataclass(frozen=True)
class GroupSpec:
    text_len: int  # valid text tokens (padding is never packed)
    grid: tuple[int, int, int]  # (F, H, W) in latent *patches* (after patchify)
    is_global: bool = False

    @property
    def video_len(self) -> int:
        return math.prod(self.grid)


@dataclass(frozen=True)
class SceneSpec:
    groups: tuple[GroupSpec, ...]  # [global?] shot 1 .. shot n

    @property
    def num_shots(self) -> int:
        return sum(not g.is_global for g in self.groups)

    @property
    def num_tokens(self) -> int:
        return sum(g.text_len + g.video_len for g in self.groups)

    def extended(self, groups: tuple[GroupSpec, ...]) -> SceneSpec:
        return SceneSpec(self.groups + tuple(groups))


@dataclass
class AttnIntervals:
    """Mask as per-query-row key intervals ``[lo, hi)``; queries and keys may differ (KV cache).

    ``runs`` lists maximal query runs sharing one interval, as host ints
    ``(q_start, q_end, k_lo, k_hi)`` in scene order: one run per scene (bidirectional) or per
    group (causal). Backends build their kernel plans (BlockMask, ghost segments) from these.

    The isolated mask needs two key intervals per row (global group ∪ own group): the second
    is ``[lo2, hi2)`` (empty where ``lo2 == hi2``; ``None`` for the one-interval masks), and
    its runs are listed after the first ones. A row is then in two runs with disjoint keys.
    """

    lo: torch.Tensor  # [Lq] int32, key index
    hi: torch.Tensor  # [Lq] int32
    num_q: int
    num_k: int
    causal: bool
    runs: tuple[tuple[int, int, int, int], ...]
    scenes: tuple[tuple[int, int, int, int], ...]  # host (q0, q1, k0, k1) per scene
    scene_full: tuple[bool, ...]  # per scene: every row sees the whole scene
    plans: dict = field(default_factory=dict, repr=False, compare=False)  # backend plans, memo
    lo2: torch.Tensor | None = None  # [Lq] int32: second interval (isolated mask)
    hi2: torch.Tensor | None = None

    def plan_for(self, backend) -> object:
        """The backend's kernel plan for these intervals, built once and reused by every layer."""
        if backend.name not in self.plans:
            self.plans[backend.name] = backend.plan(self)
        return self.plans[backend.name]

    def to(self, device: torch.device | str) -> AttnIntervals:
        return self._moved(to_device(self.tensors(), device))

    def tensors(self) -> list[torch.Tensor]:
        """The interval bounds: ``lo, hi`` and, for a two-interval mask, ``lo2, hi2``."""
        return [t for t in (self.lo, self.hi, self.lo2, self.hi2) if t is not None]

    def _moved(self, moved: list[torch.Tensor]) -> AttnIntervals:
        """``tensors()`` moved elsewhere; on another device the plans are rebuilt there (from
        host ints, ``plan_for``)."""
        if moved[0].device == self.lo.device:
            return self
        return dataclasses.replace(self, plans={}, **dict(zip(("lo", "hi", "lo2", "hi2"), moved)))


@dataclass
class PackedMeta:
    """All metadata of one packed micro-batch. G = groups, L = joint tokens, S = scenes."""

    specs: tuple[SceneSpec, ...]
    mask: str
    text_rope: bool
    num_text: int  # Nt
    num_video: int  # Nv
    group_text_len: tuple[int, ...]  # host copies, [G]
    group_video_len: tuple[int, ...]
    group_text_count: torch.Tensor  # [G] device copy of group_text_len (no host sync to read)
    text_group: torch.Tensor  # [Nt] group index 0..G-1
    video_group: torch.Tensor  # [Nv]
    joint_group: torch.Tensor  # [L]
    joint_from_streams: torch.Tensor  # [L] gather index into cat([text, video])
    text_to_joint: torch.Tensor  # [Nt]
    video_to_joint: torch.Tensor  # [Nv]
    rope_coords: torch.Tensor  # [L, 3] (t, h, w); unused rows (text, text_rope off) are 0
    rope_rotate: torch.Tensor  # [L] bool: rows that get a rotation
    attn: AttnIntervals  # joint-sequence mask
    text_attn: AttnIntervals  # each group's text attends to itself (token refiner)
    num_shots: int
    shot_group: torch.Tensor  # [num_shots]
    video_shot: torch.Tensor  # [Nv] shot index, -1 for dummy tokens
    shot_video_cu: torch.Tensor  # [num_shots+1] offsets in the video stream of shots only
    cached_groups: int = 0  # KV cache: groups before this batch's groups (one scene)
    cached_tokens: int = 0
    # Sequence parallelism: this rank's slice (``lct_train.parallel.ulysses.SequenceShard``).
    # When set, every per-token field (and num_text / num_video) covers the slice only; attn,
    # text_attn and the per-group / per-shot fields stay those of the whole batch.
    shard: object | None = None

    @property
    def num_groups(self) -> int:
        return len(self.group_text_len)

    @property
    def num_joint(self) -> int:
        return self.num_text + self.num_video

    def to(self, device: torch.device | str) -> PackedMeta:
        """Every tensor (the intervals' included) in one non-blocking copy (``transfer``)."""
        return move_meta(self, device, ("attn", "text_attn"))


def _validate(specs: list[SceneSpec], cached: SceneSpec | None) -> None:
    if not specs:
        raise ValueError("build_packed_meta: specs is empty")
    for s, spec in enumerate(specs):
        if not spec.groups:
            raise ValueError(f"build_packed_meta: scene {s} has no groups")
        for g, group in enumerate(spec.groups):
            where = f"scene {s} group {g}"
            if group.is_global and (g > 0 or (cached is not None and cached.groups)):
                raise ValueError(f"{where}: the global group must be the scene's first group")
            if group.text_len < 0:
                raise ValueError(f"{where}: text_len must be >= 0, got {group.text_len}")
            if len(group.grid) != 3 or any(int(d) < 1 for d in group.grid):
                raise ValueError(f"{where}: grid must be 3 positive ints, got {group.grid}")


def _scene_end(spec: SceneSpec, text_rope: bool, start: int = 0) -> int:
    """The position after the scene's last group (SPEC §3), on the host (no coordinates built)."""
    return start + sum((g.text_len if text_rope else 0) + max(g.grid) for g in spec.groups)


def _scene_positions(spec: SceneSpec, text_rope: bool, start: int = 0) -> list:
    """Per group (text coords [L,3], video coords [V,3]) per SPEC §3."""
    p, out = start, []
    for group in spec.groups:
        if text_rope:
            text = torch.arange(p, p + group.text_len).unsqueeze(1).expand(-1, 3)
            s = p + group.text_len
        else:
            text = torch.zeros(group.text_len, 3, dtype=torch.long)
            s = p
        f, h, w = group.grid
        grid = torch.stack(
            torch.meshgrid(torch.arange(f), torch.arange(h), torch.arange(w), indexing="ij"), -1
        ).reshape(-1, 3)
        out.append((text, grid + s))
        p = s + max(group.grid)
    return out


def _scene_runs(groups: list[tuple[int, int, int, int, bool]], mask: str, k0: int, k1: int):
    """(first-interval runs, second-interval runs) of one scene, per SPEC §4 / the baseline."""
    if mask == "causal":
        return [(q0, q1, k0, kg1) for q0, q1, _, kg1, _ in groups if q1 > q0], []
    if mask == "isolated":
        own = [(q0, q1, kg0, kg1) for q0, q1, kg0, kg1, _ in groups if q1 > q0]
        glob = [(kg0, kg1) for _, _, kg0, kg1, is_global in groups[:1] if is_global]
        extra = [(q0, q1, *glob[0]) for q0, q1, _, _, is_global in groups
                 if glob and not is_global and q1 > q0]
        return own, extra
    q_start, q_end = groups[0][0], groups[-1][1]
    return ([(q_start, q_end, k0, k1)] if q_end > q_start else []), []


def _intervals(
    run_bounds: list[list[tuple[int, int, int, int, bool]]],
    mask: str,
    num_q: int,
    num_k: int,
    scene_q: list[tuple[int, int]],
    scene_k: list[tuple[int, int]],
) -> AttnIntervals:
    """`run_bounds[s]` = per group of scene s (q_start, q_end, k_group_start, k_group_end,
    is_global)."""
    lo = torch.empty(num_q, dtype=INTERVAL_DTYPE)
    hi = torch.empty(num_q, dtype=INTERVAL_DTYPE)
    second = mask == "isolated"
    lo2, hi2 = (torch.zeros(num_q, dtype=INTERVAL_DTYPE) for _ in range(2)) if second else (None, None)
    runs, extra_runs, scene_full = [], [], []
    for (_, _), (k0, k1), groups in zip(scene_q, scene_k, run_bounds):
        scene_runs, extra = _scene_runs(groups, mask, k0, k1)
        for q0, q1, klo, khi in scene_runs:
            lo[q0:q1], hi[q0:q1] = klo, khi
        for q0, q1, klo, khi in extra:
            lo2[q0:q1], hi2[q0:q1] = klo, khi
        runs += scene_runs
        extra_runs += extra
        scene_full.append(all(r[2:] == (k0, k1) for r in scene_runs))
    return AttnIntervals(
        lo=lo,
        hi=hi,
        num_q=num_q,
        num_k=num_k,
        causal=mask == "causal",
        runs=tuple(runs + extra_runs),
        scenes=tuple((q0, q1, k0, k1) for (q0, q1), (k0, k1) in zip(scene_q, scene_k)),
        scene_full=tuple(scene_full),
        lo2=lo2,
        hi2=hi2,
    )


def build_packed_meta(
    specs: list[SceneSpec] | tuple[SceneSpec, ...],
    *,
    mask: str = "bidirectional",
    text_rope: bool = True,
    cached: SceneSpec | None = None,
    device: torch.device | str | None = None,
) -> PackedMeta:
    """Builds all metadata of a packed batch of scenes (joint order `[T_G D_G T_1 V_1 ...]`).

    ``cached``: the groups already in a KV cache (one scene, causal mask only); ``specs`` is then
    the one scene's *new* groups: positions continue after the cached groups and key intervals run
    over ``cache + new``.
    """
    specs = list(specs)
    if mask not in MASKS:
        raise ValueError(f"build_packed_meta: mask must be one of {MASKS}, got {mask!r}")
    if cached is not None:
        if mask != "causal":
            raise ValueError(
                "build_packed_meta: a KV cache needs mask='causal' (bidirectional "
                "attention is not cache-exact)"
            )
        if len(specs) != 1:
            raise ValueError(f"build_packed_meta: with cached=... pass one scene, got {len(specs)}")
    _validate(specs, cached)
    cached = cached or SceneSpec(())
    cached_tokens = cached.num_tokens
    num_text = sum(g.text_len for s in specs for g in s.groups)
    num_video = sum(g.video_len for s in specs for g in s.groups)
    joint_from_streams, text_to_joint, video_to_joint = [], [], []
    coords, rotate, joint_group = [], [], []
    text_runs, scene_q, scene_k, run_bounds = [], [], [], []
    group_text_len, group_video_len = [], []
    shot_group, video_shot, shot_sizes = [], [], []
    t_off = v_off = j_off = 0
    cached_end = _scene_end(cached, text_rope)
    for spec in specs:
        positions = _scene_positions(spec, text_rope, cached_end)
        j_scene, groups = j_off, []
        for group, (t_coords, v_coords) in zip(spec.groups, positions):
            g = len(group_text_len)
            lt, lv = group.text_len, group.video_len
            joint_from_streams += [
                torch.arange(t_off, t_off + lt),
                num_text + torch.arange(v_off, v_off + lv),
            ]
            text_to_joint.append(torch.arange(j_off, j_off + lt))
            video_to_joint.append(torch.arange(j_off + lt, j_off + lt + lv))
            coords += [t_coords, v_coords]
            rotate += [torch.full((lt,), text_rope), torch.ones(lv, dtype=torch.bool)]
            joint_group.append(torch.full((lt + lv,), g))
            text_runs.append((t_off, t_off + lt, t_off, t_off + lt, False))
            groups.append((j_off, j_off + lt + lv, cached_tokens + j_off,
                           cached_tokens + j_off + lt + lv, group.is_global))
            group_text_len.append(lt)
            group_video_len.append(lv)
            if group.is_global:
                video_shot.append(torch.full((lv,), -1))
            else:
                video_shot.append(torch.full((lv,), len(shot_group)))
                shot_group.append(g)
                shot_sizes.append(lv)
            t_off, v_off, j_off = t_off + lt, v_off + lv, j_off + lt + lv
        run_bounds.append(groups)
        scene_q.append((j_scene, j_off))
        scene_k.append((j_scene, cached_tokens + j_off))  # j_scene = 0 with a cache (one scene)

    def cat(parts: list[torch.Tensor], dtype=INDEX_DTYPE) -> torch.Tensor:
        return torch.cat(parts).to(dtype) if parts else torch.zeros(0, dtype=dtype)

    num_joint = num_text + num_video
    attn = _intervals(run_bounds, mask, num_joint, cached_tokens + num_joint, scene_q, scene_k)
    text_groups = [run[:2] for run in text_runs]
    text_attn = _intervals(
        [[run] for run in text_runs], "bidirectional", num_text, num_text, text_groups, text_groups
    )
    meta = PackedMeta(
        specs=tuple(specs),
        mask=mask,
        text_rope=text_rope,
        num_text=num_text,
        num_video=num_video,
        group_text_len=tuple(group_text_len),
        group_video_len=tuple(group_video_len),
        group_text_count=torch.tensor(group_text_len, dtype=INDEX_DTYPE),
        text_group=torch.repeat_interleave(
            torch.arange(len(group_text_len)), torch.tensor(group_text_len)
        ),
        video_group=torch.repeat_interleave(
            torch.arange(len(group_video_len)), torch.tensor(group_video_len)
        ),
        joint_group=cat(joint_group),
        joint_from_streams=cat(joint_from_streams),
        text_to_joint=cat(text_to_joint),
        video_to_joint=cat(video_to_joint),
        rope_coords=torch.cat(coords).to(INDEX_DTYPE),
        rope_rotate=cat(rotate, torch.bool),
        attn=attn,
        text_attn=text_attn,
        num_shots=len(shot_group),
        shot_group=torch.tensor(shot_group, dtype=INDEX_DTYPE),
        video_shot=cat(video_shot),
        shot_video_cu=torch.tensor([0, *shot_sizes], dtype=INDEX_DTYPE).cumsum(0),
        cached_groups=len(cached.groups),
        cached_tokens=cached_tokens,
    )
    return meta.to(device) if device is not None else meta

