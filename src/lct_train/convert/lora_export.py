"""A ``finetune=lora`` checkpoint -> diffusers' LoRA format, or merged full weights.

diffusers' format (what ``HunyuanVideoPipeline.load_lora_weights`` and the transformer's
``load_lora_adapter`` read): one ``pytorch_lora_weights.safetensors`` with
``transformer.<module>.lora_A.weight [r, in]`` and ``...lora_B.weight [out, r]`` (``<module>``:
diffusers' name of the LCT module by the family's state-dict adapter, `lora_keymap`; both
families keep diffusers' names, and an adapter of the patch embedding takes PEFT's Conv3d
shapes), and a header entry
``lora_adapter_metadata``: the PEFT ``LoraConfig`` of the transformer (``transformer.r``,
``transformer.lora_alpha``, ``transformer.target_modules``).

Alpha: the written B is ``B * alpha / r`` and the metadata says ``lora_alpha = r`` (scale 1), so
every reader computes ``W + B_file @ A`` whether it reads the metadata (diffusers, PEFT) or
assumes alpha = r (most other tools). `read_diffusers_lora` reverses it.

``--merge``: the base the run trained on (``lct_meta.json``'s ``lora.base``, or ``base=``),
streamed tensor by tensor, ``W + (alpha / r) B @ A`` added in fp32 where an adapter sits,
written as an LCT export (``config.json``, ``model*.safetensors``) that ``export-diffusers``
turns into a diffusers transformer. The base's checksum must be the one the run recorded.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lct_train.convert.dcp_export import layout_errors, load_dcp_weights
from lct_train.convert.families import family_of_config
from lct_train.convert.model_spec import (
    CONFIG_FILE,
    EXPORT_INFO_FILE,
    WEIGHTS_BASE,
    cast,
    checkpoint_model_config,
    expected_shapes,
    export_dtype,
    island_keys,
)
from lct_train.core import checkpoint_layout as layout
from lct_train.core.checkpoint_layout import run_settings
from lct_train.core.dtypes import dtype_of
from lct_train.core.errors import ConversionError, check_keys_and_shapes
from lct_train.core.safetensors_io import (
    DEFAULT_MAX_SHARD_BYTES,
    SafetensorsReader,
    atomic_output_dir,
    plan_shards,
    tensor_nbytes,
    write_json,
    write_sharded,
)

LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE
METADATA_KEY = "lora_adapter_metadata"  # diffusers' LORA_ADAPTER_METADATA_KEY
PREFIX = "transformer"
SUFFIXES = (".lora_A.weight", ".lora_B.weight")
CHECKSUM_REL_TOL = 1e-9


class LoraCheckpoint:
    """The adapters of a LoRA run's checkpoint (bare FQNs, fp32) and what it recorded."""

    def __init__(self, path: str | os.PathLike):
        with layout_errors():
            self.ckpt = layout.resolve_checkpoint(path)
            self.meta = layout.read_meta(self.ckpt)
            self.model_cfg = checkpoint_model_config(self.meta, self.ckpt)
        self.lora = self.meta.get("lora")
        if self.lora is None:
            raise ConversionError(f"{self.ckpt} is not a LoRA checkpoint (its lct_meta.json has "
                                  "no `lora` entry): use `lct-convert export`")
        self.adapters = load_dcp_weights(self.ckpt, "model", torch.float32)
        self.modules = adapter_modules(self.adapters, str(self.ckpt))
        self.rank, self.alpha = int(self.lora["rank"]), float(self.lora["alpha"])

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


def adapter_modules(adapters: dict[str, torch.Tensor], source: str) -> list[str]:
    """The adapted modules of an adapter state dict; each must have both A and B."""
    modules = sorted({k.removesuffix(s) for k in adapters for s in SUFFIXES if k.endswith(s)})
    want = {f"{m}{s}" for m in modules for s in SUFFIXES}
    if want != set(adapters):
        odd = sorted(set(adapters) ^ want)
        raise ConversionError(f"{source}: adapter tensors without their pair or of another "
                              f"kind: {odd[:5]}")
    return modules


def lora_keymap(cfg):
    """The state-dict adapter of ``cfg``'s family: LCT <-> diffusers names of a LoRA file."""
    return family_of_config(cfg).adapter(cfg)


def diffusers_lora_state(adapters: dict[str, torch.Tensor], rank: int, alpha: float,
                         dtype: torch.dtype | None = None, keymap=None) -> tuple[dict, dict]:
    """``(tensors, safetensors header)`` of diffusers' format for bare-FQN ``adapters``
    (renamed / reshaped by ``keymap``, `lora_keymap`, when given)."""
    modules = adapter_modules(adapters, "adapters")
    scaled = {}
    for module in modules:
        scaled[f"{module}.lora_A.weight"] = adapters[f"{module}.lora_A.weight"]
        scaled[f"{module}.lora_B.weight"] = adapters[f"{module}.lora_B.weight"].float() \
            * (alpha / rank)
    if keymap is not None:
        scaled = keymap.lora_to_diffusers(scaled)
    tensors = {f"{PREFIX}.{k}": cast(v.contiguous(), dtype) for k, v in sorted(scaled.items())}
    config = {"r": rank, "lora_alpha": rank,
              "target_modules": adapter_modules(scaled, "adapters")}
    metadata = {f"{PREFIX}.{k}": v for k, v in config.items()}
    return tensors, {"format": "pt", METADATA_KEY: json.dumps(metadata, sort_keys=True)}


def write_diffusers_lora(out: Path, tensors: dict, header: dict) -> Path:
    """Writes ``out/pytorch_lora_weights.safetensors`` (``out`` exists)."""
    save_file(tensors, str(out / LORA_FILE), metadata=header)
    return out / LORA_FILE


def read_diffusers_lora(path: str | os.PathLike, keymap=None
                        ) -> tuple[dict[str, torch.Tensor], int, float]:
    """A diffusers LoRA file (or a directory holding ``pytorch_lora_weights.safetensors``) ->
    ``(bare-FQN adapters, rank, alpha)``: keys with or without the ``transformer.`` prefix,
    PEFT's ``.lora_A.default.weight`` accepted; alpha from the header, else alpha = rank.
    ``keymap`` (`lora_keymap`): diffusers' names and shapes -> the LCT model's."""
    path = Path(path)
    file = path / LORA_FILE if path.is_dir() else path
    if not file.is_file():
        raise ConversionError(f"LoRA file {file} does not exist")
    try:
        with safe_open(str(file), framework="pt") as handle:
            header = handle.metadata() or {}
            raw = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    except Exception as err:  # safetensors raises its own error types on a bad file
        raise ConversionError(f"cannot read LoRA file {file}: {err}") from err
    adapters = {}
    for key, value in raw.items():
        name = key.removeprefix(f"{PREFIX}.").replace(".default.weight", ".weight")
        if not name.endswith(SUFFIXES):
            raise ConversionError(f"LoRA file {file}: {key} is not a lora_A / lora_B weight")
        adapters[name] = value.float()
    if keymap is not None:
        adapters = keymap.lora_from_diffusers(adapters)
    modules = adapter_modules(adapters, str(file))
    ranks = {adapters[f"{m}.lora_A.weight"].shape[0] for m in modules}
    if len(ranks) != 1:
        raise ConversionError(f"LoRA file {file}: layers of different ranks {sorted(ranks)}")
    rank = ranks.pop()
    config = json.loads(header.get(METADATA_KEY, "{}"))
    alpha = float(config.get(f"{PREFIX}.lora_alpha", rank))
    return adapters, rank, alpha


def export_lora(path: str | os.PathLike, out: str | os.PathLike, *,
                dtype: torch.dtype | None = None, overwrite: bool = False) -> Path:
    """A LoRA checkpoint -> ``out/pytorch_lora_weights.safetensors`` (+ ``lct_export.json``)."""
    run = LoraCheckpoint(path)
    tensors, header = diffusers_lora_state(run.adapters, run.rank, run.alpha, dtype,
                                           lora_keymap(run.model_cfg))
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        write_diffusers_lora(tmp, tensors, header)
        write_json(tmp / EXPORT_INFO_FILE, _info(run, dtype) | {"format": "diffusers-lora"})
    return Path(out)


def _info(run: LoraCheckpoint, dtype) -> dict:
    return {"source": str(run.ckpt.resolve()), "weights": "model", "step": run.meta.get("step"),
            "dtype": str(dtype or "stored"), "git_revision": run.meta.get("git_revision"),
            "lora": run.lora, **run_settings(run.meta)}


def merge_lora_export(path: str | os.PathLike, out: str | os.PathLike, *,
                      base: str | os.PathLike | None = None, dtype: torch.dtype | None = None,
                      max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
                      overwrite: bool = False) -> Path:
    """A LoRA checkpoint merged into its base -> an LCT export (``--merge``)."""
    run = LoraCheckpoint(path)
    base = Path(base or run.lora["base"])
    if layout.holds_checkpoint(base):  # a merged stage 2's base: stage 1's checkpoint
        raise ConversionError(f"the base of {run.ckpt} is the checkpoint {base} (its adapters "
                              f"were merged into their base): write it first with `lct-convert "
                              f"export-lora {base} MERGED --merge`, then pass --base MERGED")
    if not base.exists():
        raise ConversionError(f"base weights {base} (recorded by {run.ckpt}) do not exist: pass "
                              "--base PATH (a safetensors file or export directory)")
    cfg = run.model_cfg
    held_dtype = _held_dtypes(run)
    islands = island_keys(cfg)
    sums = torch.zeros(2, dtype=torch.float64)
    with SafetensorsReader(base) as reader:
        check_keys_and_shapes(reader.shapes(), expected_shapes(cfg), what=f"base {base}")
        missing = [m for m in run.modules if f"{m}.weight" not in reader.key_file]
        if missing:
            raise ConversionError(f"base {base} has no weight for the adapted {missing[:5]}")
        stored_dtype = {k: reader.dtype(k) for k in reader}

        def produce(keys):
            tensors = {}
            for key in keys:
                value = reader.get(key).to(held_dtype(key))
                double = value.double()
                sums.add_(torch.stack([double.sum(), double.square().sum()]))
                module = key.removesuffix(".weight")
                if key.endswith(".weight") and module in run.modules:
                    delta = run.adapters[f"{module}.lora_B.weight"] \
                        @ run.adapters[f"{module}.lora_A.weight"]
                    value = value.float() + delta * run.scaling
                tensors[key] = cast(value.to(stored_dtype[key]), dtype, key in islands).contiguous()
            return tensors

        sizes = {k: tensor_nbytes(s, export_dtype(dtype, k in islands) or stored_dtype[k])
                 for k, s in reader.shapes().items()}
        with atomic_output_dir(out, overwrite=overwrite) as tmp:
            write_sharded(tmp, WEIGHTS_BASE, plan_shards(sizes, max_shard_bytes), produce)
            want = run.lora["base_checksum"]
            if not all(math.isclose(a, b, rel_tol=CHECKSUM_REL_TOL)
                       for a, b in zip(sums.tolist(), want)):
                raise ConversionError(f"base {base} is not the one {run.ckpt} was trained on "
                                      f"(checksum {sums[0]:.9e}/{sums[1]:.9e}, recorded "
                                      f"{want[0]:.9e}/{want[1]:.9e})")
            write_json(tmp / CONFIG_FILE, cfg.to_dict())
            write_json(tmp / EXPORT_INFO_FILE, _info(run, dtype) | {"merged_base": str(base)})
    return Path(out)


def merge_into_state(state: dict[str, torch.Tensor], adapters: dict[str, torch.Tensor],
                     scale: float, source: str) -> None:
    """``W += scale * B @ A`` (in fp32, stored back in W's dtype) for every adapted module of
    a bare state dict, in place; a module it lacks or a shape that does not fit is one line."""
    for module in adapter_modules(adapters, source):
        key = f"{module}.weight"
        a, b = adapters[f"{module}.lora_A.weight"], adapters[f"{module}.lora_B.weight"]
        weight = state.get(key)
        if weight is None:
            raise ConversionError(f"{source}: adapts {module}, which the model does not have")
        if (b.shape[0], a.shape[1]) != tuple(weight.shape) or a.shape[0] != b.shape[1]:
            raise ConversionError(f"{source}: {module} adapters {tuple(b.shape)} x "
                                  f"{tuple(a.shape)} do not fit its weight {tuple(weight.shape)}")
        state[key] = (weight.float() + (b.float() @ a.float()) * scale).to(weight.dtype)


def merged_run_state(path: str | os.PathLike, read_base) -> tuple[LoraCheckpoint, dict]:
    """The full weights of a LoRA run's checkpoint: its base (``read_base(path)``; a base that
    is itself a LoRA checkpoint, as a merged stage 2's, is merged first), held in the run's
    base dtype, plus its adapters."""
    run = LoraCheckpoint(path)
    base = run.lora["base"]
    if layout.holds_checkpoint(base) and "lora" in layout.read_meta(
            layout.resolve_checkpoint(base)):
        _, state = merged_run_state(base, read_base)
    elif Path(base).exists():
        state = read_base(base)
    else:
        raise ConversionError(f"{run.ckpt}: its base {base!r} is not a file this can load "
                              "(a LoRA run on a scratch base has no base to sample)")
    held_dtype = _held_dtypes(run)  # the values the run trained on, kept in the file's dtype
    state = {k: v.to(held_dtype(k)).to(v.dtype) for k, v in state.items()}
    merge_into_state(state, run.adapters, run.scaling, str(run.ckpt))
    return run, state


def _held_dtypes(run: LoraCheckpoint):
    """``key -> dtype`` the run held each base weight in (its checksum was taken in it): the
    base dtype, fp32 for the model's fp32 islands (`lora.freeze_base`)."""
    cfg = run.meta["config"]
    name = cfg.get("finetune", {}).get("base_dtype", "compute")
    base = dtype_of(cfg["parallel"]["param_dtype"] if name == "compute" else name)
    islands = island_keys(run.model_cfg)
    return lambda key: torch.float32 if key in islands else base
