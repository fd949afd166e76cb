"""Model FLOPs of one training micro-batch, for MFU (counted, not measured).

Convention (documented, torchtitan-style): a training step costs 3x the forward FLOPs
(forward + backward = 2x forward); a Linear whose weight has no gradient (the frozen base of
a LoRA run) costs 2x (forward + input gradient); activation-checkpoint recomputation is *not*
counted, so MFU is comparable with and without AC. Forward FLOPs are the sum of

- **matmuls**: every ``nn.Linear`` costs ``2 * in * out`` per row it is applied to. Which rows a
  Linear sees is found once per architecture by running a narrow twin of the model (same
  module tree, width 8) on a probe batch with distinct counts and matching each Linear's row
  count to video tokens ``Nv``, text tokens ``Nt``, joint tokens ``Nt + Nv`` or groups ``G``.
  Dummy video tokens count: they are computed.
- **attention under its mask**: for every query row the keys it may see ``[lo, hi)``;
  ``sum_rows (hi - lo)`` pairs cost ``4 * heads * head_dim`` (``QK^T`` and ``PV``) per pair and
  layer. Joint attention runs in every dual and single block (the batch's mask, so causal
  masks cost less); the token refiner's attention runs over each group's own text.

Elementwise work (norms, RoPE, softmax, modulation) is not counted.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import torch
from torch import nn

from lct_train.core.fqn import clean_fqn
from lct_train.model.config import ModelConfig
from lct_train.model.layout import (
    AttnIntervals,
    GroupSpec,
    PackedMeta,
    SceneSpec,
    build_packed_meta,
)

MATMUL_FLOPS = 2  # multiply + add
ATTN_MATMULS = 2  # QK^T and PV
TRAIN_FACTOR = 3  # forward + backward (2x forward)
PROBE_WIDTH = dict(num_heads=1, head_dim=8, rope_axes_dim=(2, 2, 4), text_dim=8, pooled_dim=8,
                   latent_channels=1, time_freq_dim=8, attn_backend="reference")
# Probe scene: a global group and one shot whose counts are pairwise distinct.
PROBE_GLOBAL_TEXT, PROBE_SHOT_TEXT, PROBE_SHOT_GRID = 3, 5, (1, 3, 7)
ROW_KINDS = ("video", "text", "joint", "group")

# Peak dense bf16 TFLOP/s per device, matched against torch.cuda.get_device_name().
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "H800": 989.0, "A100": 312.0, "A800": 312.0,
               "L40S": 362.0, "L40": 181.0, "A10": 125.0, "4090": 165.0, "B200": 2250.0}


def attended_pairs(attn: AttnIntervals) -> int:
    """``sum over query rows of (hi - lo)``, from the host-side runs (no device sync)."""
    return sum((q1 - q0) * (k1 - k0) for q0, q1, k0, k1 in attn.runs)


def _probe_meta(cfg: ModelConfig) -> PackedMeta:
    spec = SceneSpec((GroupSpec(PROBE_GLOBAL_TEXT, cfg.dummy_grid, is_global=True),
                      GroupSpec(PROBE_SHOT_TEXT, PROBE_SHOT_GRID)))
    return build_packed_meta([spec], mask="bidirectional", text_rope=cfg.text_rope)


@torch.no_grad()
def linear_row_kinds(cfg: ModelConfig) -> dict[str, str]:
    """FQN of every Linear -> which rows it runs on (one of ``ROW_KINDS`` or ``other``)."""
    from lct_train.model.mmdit import LCTModel

    probe_cfg = dataclasses.replace(cfg, **PROBE_WIDTH)
    probe = LCTModel(probe_cfg)
    meta = _probe_meta(probe_cfg)
    kind_of_rows = {meta.num_video: "video", meta.num_text: "text",
                    meta.num_video + meta.num_text: "joint", meta.num_groups: "group"}
    if len(kind_of_rows) != len(ROW_KINDS):
        raise RuntimeError(f"flops probe: row counts collide for dummy_grid={cfg.dummy_grid}")
    kinds: dict[str, str] = {}

    def record(name):
        def hook(_module, inputs, _output):
            kinds[name] = kind_of_rows.get(inputs[0].shape[:-1].numel(), "other")
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in probe.named_modules()
               if isinstance(m, nn.Linear)]
    groups = meta.num_groups
    probe(torch.zeros(meta.num_video, probe_cfg.patch_dim), torch.zeros(meta.num_text, 8),
          torch.zeros(groups, 8), torch.zeros(groups), meta,
          guidance=torch.ones(groups) if cfg.guidance_embeds else None)
    for h in handles:
        h.remove()
    return kinds


class FlopCounter:
    """Training FLOPs of a micro-batch of ``model`` (any width; FSDP-wrapped is fine)."""

    def __init__(self, model: nn.Module, cfg: ModelConfig):
        kinds = linear_row_kinds(cfg)
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
        self.joint_layers = cfg.num_dual_blocks + cfg.num_single_blocks
        self.text_layers = cfg.num_refiner_blocks

    def linear_flops(self, meta: PackedMeta, frozen: bool = False) -> int:
        """Forward FLOPs of every ``nn.Linear`` (``frozen``: of those without a weight
        gradient) on this batch."""
        rows = {"video": meta.num_video, "text": meta.num_text,
                "joint": meta.num_video + meta.num_text, "group": meta.num_groups, "other": 1}
        per_row = self.frozen_per_row if frozen else self.per_row
        return sum(per_row[k] * rows[k] for k in per_row)

    def attention_flops(self, meta: PackedMeta) -> int:
        """Forward FLOPs of ``QK^T`` and ``PV`` under the batch's masks."""
        pairs = (self.joint_layers * attended_pairs(meta.attn)
                 + self.text_layers * attended_pairs(meta.text_attn))
        return self.attn_per_pair * pairs

    def forward_flops(self, meta: PackedMeta) -> int:
        return self.linear_flops(meta) + self.attention_flops(meta)

    def train_flops(self, meta: PackedMeta) -> int:
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
