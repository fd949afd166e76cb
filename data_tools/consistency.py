"""Cross-shot consistency of a scene against its synth ground truth (``gt/<key>.json``).

Works on decoded RGB frames of any scene that follows a synth scene's prompts (real or
generated), so it needs no positions: per shot, each character the shot should show must be
present (enough pixels near its rendered colour), and the environment's colour must be
present; a colour-histogram intersection also scores how similar the shots look.
"""

from __future__ import annotations

import itertools

import torch

COLOUR_TOLERANCE = 48.0  # max RGB distance to count a pixel as "this colour"
MIN_CHARACTER_FRACTION = 0.003  # a character is present if it covers this share of pixels
MIN_BACKGROUND_FRACTION = 0.05
HIST_LEVELS = 4  # quantisation levels per channel for the palette histogram


def colour_fraction(frames: torch.Tensor, rgb, tol: float = COLOUR_TOLERANCE) -> float:
    """Share of pixels of ``uint8 [T, H, W, 3]`` within ``tol`` (L2) of ``rgb``."""
    x = frames.reshape(-1, 3).float()
    dist = (x - torch.tensor(rgb, dtype=torch.float32)).norm(dim=1)
    return float((dist <= tol).float().mean())


def palette(frames: torch.Tensor, levels: int = HIST_LEVELS) -> torch.Tensor:
    """Normalised histogram over ``levels**3`` quantised colours."""
    q = (frames.reshape(-1, 3).long() * levels // 256).clamp_max(levels - 1)
    idx = (q[:, 0] * levels + q[:, 1]) * levels + q[:, 2]
    hist = torch.bincount(idx, minlength=levels**3).float()
    return hist / hist.sum()


def scene_consistency(shots: list[torch.Tensor], truth: dict, tol: float = COLOUR_TOLERANCE) -> dict:
    """Scores in [0, 1] for a list of per-shot frames ``uint8 [T, H, W, 3]``.

    ``character_presence``: share of (shot, expected character) pairs found;
    ``background_presence``: share of shots showing the environment colour;
    ``palette_similarity``: mean pairwise histogram intersection between shots;
    ``score``: the mean of the first two.
    """
    if len(shots) != len(truth["shots"]):
        raise ValueError(f"scene has {len(shots)} shots, ground truth {len(truth['shots'])}")
    chars = {c["index"]: c for c in truth["characters"]}
    bg = truth["environment"]["rendered_rgb"]
    found, expected, bg_hits = 0, 0, 0
    for frames, shot in zip(shots, truth["shots"]):
        for k in shot["visible"]:
            expected += 1
            found += colour_fraction(frames, chars[k]["rendered_rgb"], tol) >= MIN_CHARACTER_FRACTION
        bg_hits += colour_fraction(frames, bg, tol) >= MIN_BACKGROUND_FRACTION
    hists = [palette(f) for f in shots]
    pairs = list(itertools.combinations(hists, 2))
    similarity = sum(float(torch.minimum(a, b).sum()) for a, b in pairs) / len(pairs) if pairs else 1.0
    presence = found / expected if expected else 1.0
    background = bg_hits / len(shots)
    return {"character_presence": presence, "background_presence": background,
            "palette_similarity": similarity, "score": (presence + background) / 2}
