"""``lct-eval MANIFEST --truth GT_DIR``: cross-shot consistency of the scenes in MANIFEST.

MANIFEST is a JSONL of scenes (key, shots with video paths): the synthetic set itself
(``lct-shards synth``'s ``manifest.jsonl``) or what ``lct-sample`` generated (its output
folder's ``manifest.jsonl``, keyed by the scene it followed). GT_DIR holds ``<key>.json``
ground truths (``lct-shards synth``'s ``gt/``); without ``--truth`` only the weight-free
scores are computed. Prints one row per scene, the means with 95 % intervals, and as its last
line one JSON object (``hidden_agreement`` in [0, 1], ...). With two or more scenes it also
scores the same shots shuffled across scenes (``shuffled_agreement``: chance for this set of
videos) and ``hidden_excess`` = agreement - that chance. Formulas: docs/eval.md.
"""

from __future__ import annotations

import argparse
import json
import sys

from lct_train.eval.report import (
    add_shuffled_control,
    format_table,
    score_scene,
    shuffled_shots,
    summarise,
)
from lct_train.eval.scenes import EvalInputError, read_eval_manifest, read_truth, shot_frames


def evaluate(manifest: str, truth_dir: str | None, shuffle: bool = False) -> tuple[list, list, dict]:
    """``(keys, per-scene scores, summary)`` of a manifest."""
    scenes = read_eval_manifest(manifest)
    truths = [read_truth(truth_dir, s.key) if truth_dir else None for s in scenes]
    frames = [[shot_frames(shot) for shot in s.shots] for s in scenes]
    for scene, truth, shots in zip(scenes, truths, frames):
        if truth is not None and len(truth["shots"]) != len(shots):
            raise EvalInputError(f"scene {scene.key}: {len(shots)} shots, its ground truth "
                                 f"{len(truth['shots'])}")
    if shuffle:
        frames = shuffled_shots(frames)
    scores = [score_scene(shots, truth, [shot.context for shot in scene.shots])
              for scene, truth, shots in zip(scenes, truths, frames)]
    if truth_dir and not shuffle and len(scenes) >= 2:
        add_shuffled_control(scores, [score_scene(shots, truth) for truth, shots
                                      in zip(truths, shuffled_shots(frames))])
    return [s.key for s in scenes], scores, summarise(scores)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lct-eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest")
    parser.add_argument("--truth", help="folder of <key>.json ground truths (synthetic gt/)")
    parser.add_argument("--shuffle-shots", action="store_true",
                        help="negative control: each scene's shots taken from other scenes")
    args = parser.parse_args(argv)
    try:
        keys, scores, summary = evaluate(args.manifest, args.truth, args.shuffle_shots)
    except (EvalInputError, ValueError) as exc:
        print(f"lct-eval: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(keys, scores, summary))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
