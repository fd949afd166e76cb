"""Model FLOPs of one training micro-batch, for MFU (counted, not measured).

Convention (documented, torchtitan-style): a training step costs 3x the forward FLOPs
(forward + backward = 2x forward); a Linear whose weight has no gradient (the frozen base of
a LoRA run) costs 2x (forward + input gradient); activation-checkpoint recomputation is *not*
counted, so MFU is comparable with and without AC. Forward FLOPs are the sum of

- **matmuls**: every ``nn.Linear`` costs ``2 * in * out`` per row it is applied to. Which rows a
  Linear sees is found once per architecture by running a narrow twin of the model (same
  module tree, the config's ``flops_probe_width``) on a probe batch with distinct counts and
  matching each Linear's row count to the kinds the config's ``row_counts(meta)`` names (MMDiT:
  video tokens ``Nv``, text tokens ``Nt``, joint ``Nt + Nv``, groups ``G``; Wan: ``Nv``, text
  rows ``Nt + 1``, ``G``). Dummy video tokens count: they are computed.
- **attention under its mask**: for every query row the keys it may see ``[lo, hi)``;
  ``sum_rows (hi - lo)`` pairs cost ``4 * heads * head_dim`` (``QK^T`` and ``PV``) per pair and
  layer, for each of the metadata's intervals in as many layers as the config's
  ``attention_layers`` says (MMDiT: joint attention in every dual and single block, the token
  refiner's over each group's own text; Wan: video self-attention and cross-attention into the
  text windows in every block). Causal masks cost less.

Elementwise work (norms, RoPE, softmax, modulation) is not counted.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import torch
from torch import nn

from lct_train.core.fqn import clean_fqn
from lct_train.model.layout import AttnIntervals, GroupSpec, SceneSpec

MATMUL_FLOPS = 2  # multiply + add
ATTN_MATMULS = 2  # QK^T and PV
TRAIN_FACTOR = 3  # forward + backward (2x forward)
# Probe scene: a global group and one shot whose counts are pairwise distinct.
PROBE_GLOBAL_TEXT, PROBE_SHOT_TEXT, PROBE_SHOT_GRID = 3, 5, (1, 3, 7)

# Peak dense bf16 TFLOP/s per device, matched against torch.cuda.get_device_name().
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "H800": 989.0, "A100": 312.0, "A800": 312.0,
               "L40S": 362.0, "L40": 181.0, "A10": 125.0, "4090": 165.0, "B200": 2250.0}


def attended_pairs(attn: AttnIntervals) -> int:
    """``sum over query rows of (hi - lo)``, from the host-side runs (no device sync)."""
    return sum((q1 - q0) * (k1 - k0) for q0, q1, k0, k1 in attn.runs)


def _probe_meta(cfg):
    spec = SceneSpec((GroupSpec(PROBE_GLOBAL_TEXT, cfg.dummy_grid, is_global=True),
                      GroupSpec(PROBE_SHOT_TEXT, PROBE_SHOT_GRID)))
    return cfg.build_meta([spec], mask="bidirectional")


@torch.no_grad()
def linear_row_kinds(cfg) -> dict[str, str]:
    """FQN of every Linear -> which rows it runs on (a kind of ``cfg.row_counts`` or
    ``other``), for a model config of either family."""
    from lct_train.model.family import build_model

    probe_cfg = dataclasses.replace(cfg, **cfg.flops_probe_width)
    probe = build_model(probe_cfg)
    meta = _probe_meta(probe_cfg)
    counts = cfg.row_counts(meta)
    kind_of_rows = {n: kind for kind, n in counts.items()}
    if len(kind_of_rows) != len(counts):
        raise RuntimeError(f"flops probe: row counts collide ({counts})")
    kinds: dict[str, str] = {}

    def record(name):
        def hook(_module, inputs, _output):
            kinds[name] = kind_of_rows.get(inputs[0].shape[:-1].numel(), "other")
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in probe.named_modules()
               if isinstance(m, nn.Linear)]
    groups = meta.num_groups
    pooled = torch.zeros(groups, probe_cfg.pooled_dim) if cfg.takes_pooled else None
    probe(torch.zeros(meta.num_video, probe_cfg.patch_dim),
          torch.zeros(meta.num_text, probe_cfg.text_dim), pooled, torch.zeros(groups), meta,
          guidance=torch.ones(groups) if cfg.guidance_embeds else None)
    for h in handles:
        h.remove()
    return kinds


class FlopCounter:
    """Training FLOPs of a micro-batch of ``model`` (any width; FSDP-wrapped is fine)."""

    def __init__(self, model: nn.Module, cfg):
        kinds = linear_row_kinds(cfg)
        self.row_counts = cfg.row_counts
        self.per_row: dict[str, int] = defaultdict(int)
        self.frozen_per_row: dict[str, int] = defaultdict(int)  # of which weights without grad
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear):
                # a LoRA adapter (``<layer>.lora_A``) runs on the rows of the layer it adapts
                layer = clean_fqn(name).removesuffix(".lora_A").removesuffix(".lora_B")
                kind = kinds.get(layer, "other")
                flops = MATMUL_FLOPS * module.in_features * module.out_features
                self.per_row[kind] += flops
                if not module.weight.requires_grad:
                    self.frozen_per_row[kind] += flops
        self.attn_per_pair = ATTN_MATMULS * MATMUL_FLOPS * cfg.num_heads * cfg.head_dim
        self.attention_layers = cfg.attention_layers  # meta field -> layers

    def linear_flops(self, meta, frozen: bool = False) -> int:
        """Forward FLOPs of every ``nn.Linear`` (``frozen``: of those without a weight
        gradient) on this batch."""
        rows = {**self.row_counts(meta), "other": 1}
        per_row = self.frozen_per_row if frozen else self.per_row
        return sum(per_row[k] * rows[k] for k in per_row)

    def attention_flops(self, meta) -> int:
        """Forward FLOPs of ``QK^T`` and ``PV`` under the batch's masks."""
        pairs = sum(layers * attended_pairs(getattr(meta, field))
                    for field, layers in self.attention_layers.items())
        return self.attn_per_pair * pairs

    def forward_flops(self, meta) -> int:
        return self.linear_flops(meta) + self.attention_flops(meta)

    def train_flops(self, meta) -> int:
        """3x forward, less the weight-gradient matmul of every frozen Linear (LoRA's base:
        forward + input gradient only)."""
        return TRAIN_FACTOR * self.forward_flops(meta) - self.linear_flops(meta, frozen=True)


def peak_flops(configured_tflops: float, device: torch.device) -> float | None:
    """Peak FLOP/s of one device: the configured value, else a known GPU's, else None."""
    if configured_tflops > 0:
        return configured_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None
