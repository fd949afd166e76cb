"""Agreement of the unprompted attributes across a scene's shots (docs/eval.md).

Works on decoded frames of any scene that follows a synthetic scene's prompts (the true
scene, or one a model generated from its prompts) and needs from the ground truth
(``gt/<key>.json`` of ``lct-shards synth``) only which characters each shot should show, so
generated shots need not put anything where the truth did. Per shot:

* the **room colour** ``b``: per-channel median of the frame border (outer ``BORDER`` share of
  rows and columns), over all frames;
* **foreground**: pixels that are not a shade of the room (``shade_distance > FG_DISTANCE``:
  patterns and light only scale the room colour);
* the **character colours**: the foreground split into as many clusters as the shot should
  show characters (k-means on chromaticity ``rgb / max(rgb)``, so a texture's darker stripes
  stay with their character), each cluster's colour the per-channel median RGB of its core:
  the share ``1 - CORE_QUANTILE`` of its pixels farthest from the room (edges blurred into the
  room by the codec, and small shapes' anti-aliased rims, are left out).

A measurement must describe a flat colour to count: the room only if at least ``MIN_FLAT``
of the border pixels are shades of it (within ``FG_DISTANCE``), a character colour only if at
least ``MIN_FLAT`` of its core lies within ``CHARACTER_TOLERANCE`` of it and it is a colour a
character can have (HSV saturation and value at least ``MIN_SATURATION``, ``MIN_VALUE``: the
world's characters are bright and saturated). Noise has a median too, and two noise or grey
shots would otherwise "agree"; items with an invalid measurement disagree.

Items of a scene: every pair of shots ``(i, j)`` gives one room item, ``|b_i - b_j| <=
ROOM_TOLERANCE``, and one item per character both shots should show: the clusters of the two
shots are matched (the assignment of least total distance) and a matched pair agrees when its
colours are within ``CHARACTER_TOLERANCE``. ``hidden_agreement`` = agreeing items / items.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

BORDER = 0.1
FG_DISTANCE = 40.0
SHADE_RANGE = (0.5, 1.1)
CHARACTER_TOLERANCE = 48.0  # RGB L2
ROOM_TOLERANCE = 32.0
MIN_CLUSTER_PIXELS = 4
MIN_FLAT = 0.5
MIN_SATURATION = 0.35
MIN_VALUE = 0.35
CORE_QUANTILE = 0.5
KMEANS_ITERS = 10


@dataclass
class ShotMeasure:
    room: torch.Tensor | None  # [3] float RGB; None: the border is no flat colour
    characters: list[torch.Tensor]  # [3] float RGB per valid cluster (may be fewer than expected)


def room_colour(frames: torch.Tensor) -> torch.Tensor | None:
    """Per-channel median RGB of the frames' border ring (None unless flat, module doc)."""
    _, h, w, _ = frames.shape
    bh, bw = max(1, round(h * BORDER)), max(1, round(w * BORDER))
    ring = torch.ones(h, w, dtype=torch.bool)
    ring[bh:h - bh, bw:w - bw] = False
    border = frames[:, ring].reshape(-1, 3).double()
    room = border.median(dim=0).values
    flat = float((shade_distance(border, room) <= FG_DISTANCE).double().mean())
    return room if flat >= MIN_FLAT else None


def shade_distance(pixels: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """``min_s |p - s c|`` over shades ``s`` in ``SHADE_RANGE`` (``pixels [N, 3]``)."""
    norm = float(colour.dot(colour)) or 1.0
    s = (pixels @ colour / norm).clamp(*SHADE_RANGE)
    return (pixels - s[:, None] * colour).norm(dim=1)


def _kmeans(features: torch.Tensor, k: int) -> torch.Tensor:
    """Cluster labels of ``features [N, D]``; farthest-point initialisation (deterministic)."""
    centres = [features[0]]
    for _ in range(1, k):
        d = torch.stack([(features - c).norm(dim=1) for c in centres]).min(dim=0).values
        centres.append(features[int(d.argmax())])
    c = torch.stack(centres)
    for _ in range(KMEANS_ITERS):
        labels = torch.cdist(features, c).argmin(dim=1)
        c = torch.stack([features[labels == j].mean(0) if (labels == j).any() else c[j]
                         for j in range(k)])
    return torch.cdist(features, c).argmin(dim=1)


def measure_shot(frames: torch.Tensor, num_characters: int) -> ShotMeasure:
    """Room colour and up to ``num_characters`` character colours of one shot."""
    room = room_colour(frames)
    if room is None:
        return ShotMeasure(None, [])
    pixels = frames.reshape(-1, 3).double()
    dist = shade_distance(pixels, room)
    keep = dist > FG_DISTANCE
    fg, dist = pixels[keep], dist[keep]
    if num_characters == 0 or fg.shape[0] < MIN_CLUSTER_PIXELS:
        return ShotMeasure(room, [])
    k = min(num_characters, fg.shape[0] // MIN_CLUSTER_PIXELS)
    chroma = fg / fg.max(dim=1, keepdim=True).values.clamp_min(1.0)
    labels = _kmeans(chroma, k)
    colours = []
    for j in range(k):
        member = labels == j
        if int(member.sum()) >= MIN_CLUSTER_PIXELS:
            core = fg[member][dist[member] >= dist[member].quantile(CORE_QUANTILE)]
            colour = core.median(dim=0).values
            if _flat(core, colour) and _character_like(colour):
                colours.append(colour)
    return ShotMeasure(room, colours)


def _flat(pixels: torch.Tensor, colour: torch.Tensor) -> bool:
    return float(((pixels - colour).norm(dim=1) <= CHARACTER_TOLERANCE).double().mean()) >= MIN_FLAT


def _character_like(colour: torch.Tensor) -> bool:
    high, low = float(colour.max()), float(colour.min())
    return high >= 255 * MIN_VALUE and (high - low) >= MIN_SATURATION * high


def _matched_agreements(a: list[torch.Tensor], b: list[torch.Tensor], n: int) -> list[bool]:
    """``n`` items: the least-distance injective matching of ``n`` clusters of ``a`` with ``b``;
    items for which either shot has too few clusters disagree."""
    m = min(n, len(a), len(b))
    best: tuple[float, list[bool]] | None = None
    for pa in itertools.permutations(range(len(a)), m):
        for pb in itertools.permutations(range(len(b)), m):
            d = [float((a[i] - b[j]).norm()) for i, j in zip(pa, pb)]
            if best is None or sum(d) < best[0]:
                best = (sum(d), [x <= CHARACTER_TOLERANCE for x in d])
    agree = best[1] if best is not None else []
    return agree + [False] * (n - m)


def visible_characters(truth: dict) -> list[list[int]]:
    """Per shot, the characters it should show (ground truth)."""
    return [list(shot["visible"]) for shot in truth["shots"]]


def measure_scene(shots, truth: dict) -> list[ShotMeasure]:
    """`measure_shot` of every shot, with the number of characters the truth says it shows."""
    visible = visible_characters(truth)
    if len(shots) != len(visible):
        raise ValueError(f"scene has {len(shots)} shots, its ground truth {len(visible)}")
    return [measure_shot(f, len(v)) for f, v in zip(shots, visible)]


def scene_items(measures: list[ShotMeasure], truth: dict, pairs) -> dict:
    """``{"characters": [bool], "room": [bool]}``: the items of the shot ``pairs``."""
    visible = visible_characters(truth)
    chars, room = [], []
    for i, j in pairs:
        a, b = measures[i].room, measures[j].room
        room.append(a is not None and b is not None and float((a - b).norm()) <= ROOM_TOLERANCE)
        common = len(set(visible[i]) & set(visible[j]))
        if common:
            chars += _matched_agreements(measures[i].characters, measures[j].characters, common)
    return {"characters": chars, "room": room}
