"""Scores of scenes (docs/eval.md): per scene, then means with 95 % intervals over scenes."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch

from lct_train.eval import hidden
from lct_train.eval.metrics import histogram_intersection, shot_ssim

# Two-sided 97.5 % quantiles of Student's t by degrees of freedom (above 30: the normal 1.96).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
        17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 22: 2.074, 24: 2.064, 26: 2.056, 28: 2.048,
        30: 2.042}
SUMMARY_KEYS = ("hidden_agreement", "character_agreement", "room_agreement",
                "shuffled_agreement", "hidden_excess", "palette_similarity", "ssim",
                "condition_palette", "condition_agreement")


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _share(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def score_scene(shots: Sequence[torch.Tensor], truth: dict | None = None,
                contexts: Sequence[Sequence[int]] | None = None) -> dict:
    """Scores of one scene from its per-shot frames ``uint8 [T, H, W, 3]``.

    ``truth``: the synthetic ground truth (else no hidden-attribute scores); ``contexts[i]``:
    the shots shot ``i`` was conditioned on (condition fidelity over those pairs)."""
    pairs = list(itertools.combinations(range(len(shots)), 2))
    cond_pairs = [(c, i) for i, ctx in enumerate(contexts or ()) for c in ctx]
    out = {
        "shots": len(shots),
        "palette_similarity": _mean([histogram_intersection(shots[i], shots[j]) for i, j in pairs]),
        "ssim": _mean([shot_ssim(shots[i], shots[j]) for i, j in pairs]),
        "condition_palette": _mean([histogram_intersection(shots[i], shots[j])
                                    for i, j in cond_pairs]),
    }
    if truth is not None:
        measures = hidden.measure_scene(shots, truth)
        items = hidden.scene_items(measures, truth, pairs)
        flags = items["characters"] + items["room"]
        cond = hidden.scene_items(measures, truth, cond_pairs)
        out |= {"hidden_agreement": _share(flags),
                "character_agreement": _share(items["characters"]),
                "room_agreement": _share(items["room"]),
                "condition_agreement": _share(cond["characters"] + cond["room"]),
                "items": len(flags)}
    return out


def interval95(values: Sequence[float]) -> tuple[float, float, float] | None:
    """``(mean, low, high)``: mean ± t(0.975, n-1) · s / sqrt(n) (n = 1: the mean itself)."""
    if not values:
        return None
    n, mean = len(values), sum(values) / len(values)
    if n == 1:
        return mean, mean, mean
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    df = n - 1
    t = T975.get(df) or (T975[max(k for k in T975 if k <= df)] if df <= 30 else 1.96)
    half = t * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def summarise(scores: Sequence[dict]) -> dict:
    """Mean and 95 % interval of every score over the scenes that have it."""
    out: dict = {"scenes": len(scores)}
    for key in SUMMARY_KEYS:
        stats = interval95([s[key] for s in scores if s.get(key) is not None])
        out[key] = None if stats is None else round(stats[0], 4)
        if stats is not None:
            out[f"{key}_ci95"] = [round(stats[1], 4), round(stats[2], 4)]
    return out


def _cell(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_table(keys: Sequence[str], scores: Sequence[dict], summary: dict) -> str:
    """A readable table: one row per scene, then the means with their 95 % intervals."""
    cols = ("hidden_agreement", "character_agreement", "room_agreement", "shuffled_agreement",
            "hidden_excess", "palette_similarity", "ssim", "condition_palette",
            "condition_agreement")
    names = ("hidden", "chars", "room", "shuffled", "excess", "palette", "ssim", "cond-pal",
             "cond-hid")
    width = max([len(k) for k in keys] + [len("mean (95% CI)")])
    lines = [f"{'scene':<{width}} {'shots':>5} " + " ".join(f"{n:>9}" for n in names)]
    for key, s in zip(keys, scores):
        lines.append(f"{key:<{width}} {s['shots']:>5} " + " ".join(f"{_cell(s.get(c)):>9}"
                                                                 for c in cols))
    lines.append(f"{'mean':<{width}} {'':>5} " + " ".join(f"{_cell(summary.get(c)):>9}"
                                                         for c in cols))
    ci = [summary.get(f"{c}_ci95") for c in cols]
    lines.append(f"{'95% CI':<{width}} {'':>5} " + " ".join(
        f"{'-' if v is None else f'±{(v[1] - v[0]) / 2:.3f}':>9}" for v in ci))
    return "\n".join(lines)


def add_shuffled_control(scores: list[dict], shuffled: list[dict]) -> None:
    """Per scene: the agreement of the same shots set in other scenes (``shuffled_agreement``:
    what the set scores by chance, e.g. a model that draws every scene alike) and
    ``hidden_excess`` = ``hidden_agreement - shuffled_agreement``."""
    for score, control in zip(scores, shuffled):
        chance = control.get("hidden_agreement")
        score["shuffled_agreement"] = chance
        if chance is not None and score.get("hidden_agreement") is not None:
            score["hidden_excess"] = score["hidden_agreement"] - chance


def shuffled_shots(scenes: Sequence[Sequence[torch.Tensor]]) -> list[list[torch.Tensor]]:
    """The metric's negative control: shot ``i`` of scene ``s`` replaced by a shot of scene
    ``s + 1 + i`` (mod the number of scenes), so no two shots of a scene share a world."""
    n = len(scenes)
    if n < 2:
        raise ValueError("the shuffled control needs at least 2 scenes")
    out = []
    for s, shots in enumerate(scenes):
        donors = [scenes[(s + 1 + i) % n] if (s + 1 + i) % n != s else scenes[(s + 2 + i) % n]
                  for i in range(len(shots))]
        out.append([d[min(i, len(d) - 1)] for i, d in enumerate(donors)])
    return out
