"""Evaluation of generated (or real) multi-shot scenes: ``lct-eval`` and in-training validation.

* `metrics`: weight-free measures usable on any video (colour-histogram intersection, SSIM of
  downsampled frames);
* `hidden`: agreement of unprompted attributes across shots, against the ground truth of the
  synthetic world (``lct-shards synth``'s ``gt/<key>.json``);
* `scenes`: the scene manifest it reads (the synthetic manifest's format, or what
  ``lct-sample`` writes), `report`: per-scene scores, means with 95 % intervals, the table.

Formulas: docs/eval.md.
"""
