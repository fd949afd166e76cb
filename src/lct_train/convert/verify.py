"""`verify`: check a converted checkpoint against its config, and optionally against a reference.

Works on an LCT export (`config.json` = `ModelConfig` or `WanConfig`) or a diffusers HunyuanVideo
or Wan transformer directory. Checks every key and shape, counts non-finite values, reports the parameter count
and a SHA-256 over (name, dtype, shape, bytes) of every tensor in name order. With a reference
(another LCT export or a diffusers directory) it runs both models on the same fixed small
single-shot input and compares the outputs.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lct_train.convert.diffusers_io import (
    diffusers_expected_shapes,
    diffusers_transformer_dir,
    read_diffusers_config,
)
from lct_train.convert.families import family_of_class, family_of_config
from lct_train.convert.model_spec import (
    build_model,
    expected_shapes,
    parse_model_config,
    read_config_json,
    read_model_config,
)
from lct_train.core.errors import ConversionError, check_keys_and_shapes
from lct_train.core.safetensors_io import SafetensorsReader
from lct_train.model.config import ModelConfig

# max |a - b| / max(|b|) allowed between two models on the reference input, per compute dtype
RELATIVE_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}
# ModelConfig fields that do not change a one-shot output (diffusers has no notion of them)
OUTPUT_NEUTRAL_FIELDS = ("dummy_grid", "attn_backend", "sampling")


@dataclass
class VerifyReport:
    path: str
    kind: str  # "lct" or "diffusers"
    num_tensors: int
    num_params: int
    dtypes: dict[str, int]  # dtype -> number of tensors
    checksum: str
    nonfinite: dict[str, int] = field(default_factory=dict)  # key -> count of inf/nan
    max_abs_diff: float | None = None
    rel_diff: float | None = None
    tolerance: float | None = None

    @property
    def ok(self) -> bool:
        within = self.rel_diff is None or self.rel_diff <= self.tolerance
        return not self.nonfinite and within

    def lines(self) -> list[str]:
        out = [
            f"checkpoint:  {self.path} ({self.kind})",
            f"tensors:     {self.num_tensors}  dtypes: {self.dtypes}",
            f"parameters:  {self.num_params:,}",
            f"sha256:      {self.checksum}",
        ]
        if self.nonfinite:
            out.append(f"NON-FINITE values in: {sorted(self.nonfinite)}")
        if self.rel_diff is not None:
            verdict = "OK" if self.rel_diff <= self.tolerance else "MISMATCH"
            out.append(
                f"reference:   max|diff|={self.max_abs_diff:.3e} relative={self.rel_diff:.3e} "
                f"(tolerance {self.tolerance:.0e}) {verdict}"
            )
        return out


@dataclass(frozen=True)
class Checkpoint:
    """What `verify` needs of a path: its kind, `ModelConfig`, weights location and, for
    diffusers, its `config.json` (each read once)."""

    kind: str  # "lct" or "diffusers"
    config: ModelConfig
    weights: Path  # the weights directory or file
    diffusers_config: dict | None = None


def _open_checkpoint(path: Path) -> Checkpoint:
    file, data = read_config_json(path)
    if "_class_name" in data:
        family = family_of_class(data["_class_name"], file)
        return Checkpoint("diffusers", family.config_from_diffusers(data), file.parent, data)
    return Checkpoint("lct", parse_model_config(data, str(file)), path)


def _checksum(reader: SafetensorsReader) -> tuple[str, dict[str, int]]:
    digest, nonfinite = hashlib.sha256(), {}
    for key in sorted(reader):
        tensor = reader.get(key).contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
        if tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                nonfinite[key] = bad
    return digest.hexdigest(), nonfinite


def load_lct_model(
    path: str | os.PathLike,
    device: str = "cpu",
    dtype=torch.float32,
    cfg: ModelConfig | None = None,
):
    """An `LCTModel` with the weights of an LCT export, in eval mode; returns (model, cfg).

    `cfg` (default: the export's `config.json`) saves reading the config again.
    """
    cfg = cfg or read_model_config(path)
    model = build_model(cfg, device="meta")
    with SafetensorsReader(path) as reader:
        check_keys_and_shapes(reader.shapes(), expected_shapes(cfg), what=f"LCT export {path}")
        state = {k: v.to(device, dtype) for k, v in reader.load_all().items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval(), cfg


def load_diffusers_model(
    path: str | os.PathLike, device: str = "cpu", dtype=torch.float32, config: dict | None = None
):
    """diffusers' transformer of the directory's family from a local directory (never the hub).

    Built on the meta device and filled with `load_state_dict(strict=True, assign=True)`, so the
    weights are held once (no `accelerate` needed for a large model). `config` (default: read
    from the directory) is its `config.json`.
    """
    weights_dir = diffusers_transformer_dir(path)
    config = config or read_diffusers_config(weights_dir)
    family = family_of_class(config["_class_name"], weights_dir)
    with torch.device("meta"):
        model = family.diffusers_model_class().from_config(config)
    with SafetensorsReader(weights_dir) as reader:
        state = {k: v.to(device, dtype) for k, v in reader.load_all().items()}
    model.load_state_dict(state, strict=True, assign=True)
    if family.finish_loading is not None:
        family.finish_loading(model, device)
    return model.eval()


def _outputs(ckpt: Checkpoint, device: str, dtype, inp_cfg: ModelConfig) -> torch.Tensor:
    family = family_of_config(inp_cfg)
    inp = family.fixed_input(inp_cfg).to(device, dtype)
    if ckpt.kind == "diffusers":
        model = load_diffusers_model(ckpt.weights, device, dtype, ckpt.diffusers_config)
        return family.run_diffusers(model, inp)
    model, cfg = load_lct_model(ckpt.weights, device, dtype, ckpt.config)
    return family.run_lct(model, cfg, inp)


def _check_same_architecture(path: Path, ckpt: Checkpoint, ref: Path, ref_ckpt: Checkpoint):
    """Outputs can only match between the same architectures (text RoPE included)."""
    if type(ckpt.config) is not type(ref_ckpt.config):
        raise ConversionError(f"{path} ({type(ckpt.config).__name__}) and {ref} "
                              f"({type(ref_ckpt.config).__name__}) are different model families")
    neutral = (*OUTPUT_NEUTRAL_FIELDS, *family_of_config(ckpt.config).output_neutral)
    ours, theirs = ckpt.config.to_dict(), ref_ckpt.config.to_dict()
    diffs = [
        f"{k}: {ours[k]!r} vs {theirs[k]!r}"
        for k in ours
        if k not in neutral and ours[k] != theirs[k]
    ]
    if not diffs:
        return
    hint = ""
    if "diffusers" in (ckpt.kind, ref_ckpt.kind) and ours.get("text_rope") != theirs.get("text_rope"):
        hint = " (diffusers has no text RoPE: compare a config with text_rope=false)"
    raise ConversionError(
        f"{path} ({ckpt.kind}) and {ref} ({ref_ckpt.kind}) are different models, their outputs "
        f"cannot match{hint}: " + "; ".join(diffs)
    )


def verify(
    path: str | os.PathLike,
    reference: str | os.PathLike | None = None,
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    rtol: float | None = None,
) -> VerifyReport:
    """Check `path` (and compare it with `reference` when given); see the module docstring.

    `rtol` bounds max|out - ref| / max|ref| (default per `dtype`, `RELATIVE_TOLERANCE`).
    """
    path = Path(path)
    ckpt = _open_checkpoint(path)
    kind, cfg = ckpt.kind, ckpt.config
    expected = expected_shapes(cfg) if kind == "lct" else diffusers_expected_shapes(cfg)
    with SafetensorsReader(ckpt.weights) as reader:
        check_keys_and_shapes(reader.shapes(), expected, what=f"{kind} checkpoint {path}")
        checksum, nonfinite = _checksum(reader)
        dtypes: dict[str, int] = {}
        for key in reader:
            name = str(reader.dtype(key)).removeprefix("torch.")
            dtypes[name] = dtypes.get(name, 0) + 1
        num_params = sum(torch.Size(s).numel() for s in reader.shapes().values())
        report = VerifyReport(str(path), kind, len(reader), num_params, dtypes, checksum)
    report.nonfinite = nonfinite
    if reference is None:
        return report
    reference = Path(reference)
    ref_ckpt = _open_checkpoint(reference)
    _check_same_architecture(path, ckpt, reference, ref_ckpt)
    got = _outputs(ckpt, device, dtype, cfg).float()
    want = _outputs(ref_ckpt, device, dtype, cfg).float()
    report.max_abs_diff = float((got - want).abs().max())
    report.rel_diff = report.max_abs_diff / max(float(want.abs().max()), torch.finfo().tiny)
    report.tolerance = rtol if rtol is not None else RELATIVE_TOLERANCE[dtype]
    return report
