"""A conversion plan: one `KeyRule` per output tensor, checked on shapes before any data moves.

A rule says which source tensors make one target tensor and how (rename, reshape, split, join).
`check_plan` runs every rule on meta tensors, so missing and unused source keys and wrong target
shapes are all reported before a byte is written; `write_plan` then streams the plan shard by
shard (one shard of targets in memory). `convert_with_plan` is the whole conversion of the
safetensors-to-safetensors commands: check, then write shards and JSON files atomically.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lct_train.convert.model_spec import cast, export_dtype
from lct_train.core.errors import ConversionError, check_keys_and_shapes, format_keys
from lct_train.core.safetensors_io import (
    SafetensorsReader,
    atomic_output_dir,
    plan_shards,
    tensor_nbytes,
    write_json,
    write_sharded,
)

Transform = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class KeyRule:
    """`target = fn(*sources)`; without `fn` the one source is copied under the new name."""

    target: str
    sources: tuple[str, ...]
    fn: Transform | None = None

    def apply(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.fn is None:
            (only,) = tensors
            return only
        return self.fn(*tensors)


def check_plan(
    plan: Sequence[KeyRule],
    source_shapes: Mapping[str, Sequence[int]],
    expected: Mapping[str, Sequence[int]],
    *,
    source_name: str,
    target_name: str,
) -> dict[str, tuple[int, ...]]:
    """Validate `plan` against the source keys and the expected target; return target shapes.

    Raises `ConversionError` listing unused and missing source keys, or, after those, the
    missing / unexpected / mis-shaped target keys.
    """
    used = {s for rule in plan for s in rule.sources}
    unused = source_shapes.keys() - used
    missing = used - source_shapes.keys()
    if unused or missing:
        parts = [f"{source_name} does not fit the {target_name} key map:"]
        if missing:
            parts.append(format_keys(f"keys the map needs but {source_name} lacks", missing))
        if unused:
            parts.append(format_keys(f"keys of {source_name} the map does not use", unused))
        raise ConversionError("\n".join(parts))
    targets: dict[str, tuple[int, ...]] = {}
    for rule in plan:
        metas = [torch.empty(tuple(source_shapes[s]), device="meta") for s in rule.sources]
        try:
            targets[rule.target] = tuple(rule.apply(metas).shape)
        except (RuntimeError, ValueError) as err:
            shapes = {s: tuple(source_shapes[s]) for s in rule.sources}
            raise ConversionError(
                f"cannot build {target_name} key {rule.target} from {source_name} {shapes}: {err}"
            ) from err
    check_keys_and_shapes(
        targets,
        expected,
        what=f"{target_name} built from {source_name}",
        missing_title=f"{target_name} keys the map does not produce",
        unexpected_title=f"keys the map produces that {target_name} does not have",
    )
    return targets


def write_plan(
    plan: Sequence[KeyRule],
    reader: SafetensorsReader,
    out_dir: Path,
    base: str,
    *,
    target_shapes: Mapping[str, Sequence[int]],
    dtype: torch.dtype | None,
    max_shard_bytes: int,
    islands: frozenset[str] = frozenset(),
) -> list[Path]:
    """Stream `plan` from `reader` into sharded safetensors `out_dir/<base>*.safetensors`, cast
    to `dtype` except the fp32 `islands` (LCT keys: a target or source among them stays fp32)."""
    by_target = {rule.target: rule for rule in plan}

    def island(rule: KeyRule) -> bool:
        return rule.target in islands or not islands.isdisjoint(rule.sources)

    def out_dtype(rule: KeyRule) -> torch.dtype:
        stored = reader.dtype(rule.sources[0])
        want = export_dtype(dtype, island(rule))
        return want if want is not None and stored.is_floating_point else stored

    sizes = {r.target: tensor_nbytes(target_shapes[r.target], out_dtype(r)) for r in plan}

    def produce(keys: Sequence[str]) -> dict[str, torch.Tensor]:
        cache: dict[str, torch.Tensor] = {}  # a source shared by several targets loads once
        out = {}
        for key in keys:
            rule = by_target[key]
            for s in rule.sources:
                if s not in cache:
                    cache[s] = reader.get(s)
            out[key] = cast(rule.apply([cache[s] for s in rule.sources]), dtype, island(rule))
        return out

    return write_sharded(out_dir, base, plan_shards(sizes, max_shard_bytes), produce)


def convert_with_plan(
    plan: Sequence[KeyRule],
    reader: SafetensorsReader,
    out: str | os.PathLike,
    base: str,
    *,
    expected: Mapping[str, Sequence[int]],
    source_name: str,
    target_name: str,
    json_files: Mapping[str, Mapping],
    dtype: torch.dtype | None,
    max_shard_bytes: int,
    overwrite: bool,
    islands: frozenset[str] = frozenset(),
) -> None:
    """`check_plan`, then write `out/<base>*.safetensors` and `json_files` (name -> object)
    into a directory renamed to `out` only when everything is written."""
    targets = check_plan(
        plan, reader.shapes(), expected, source_name=source_name, target_name=target_name
    )
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        write_plan(
            plan,
            reader,
            tmp,
            base,
            target_shapes=targets,
            dtype=dtype,
            max_shard_bytes=max_shard_bytes,
            islands=islands,
        )
        for name, obj in json_files.items():
            write_json(tmp / name, obj)
