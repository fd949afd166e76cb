"""Safetensors I/O: lazy reading of a file or a sharded directory, sharded atomic writing.

A reader never loads more than the tensors asked for; a writer fills a temporary directory
shard by shard and renames it into place only when every shard and the index are written, so
an interrupted or refused conversion leaves nothing half-written behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from lct_train.core.errors import ConversionError, format_keys

INDEX_SUFFIX = ".safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3  # 5 GiB, the Hugging Face default shard size
STANDARD_BASES = ("model", "diffusion_pytorch_model")  # preferred over variants (.fp16)
SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


def _open(file: Path):
    try:
        return safe_open(str(file), framework="pt", device="cpu")
    except (SafetensorError, OSError) as err:  # truncated, corrupt or unreadable
        raise ConversionError(f"cannot read safetensors file {file}: {err}") from err


Index = tuple[Path, dict[str, str]]  # an index file and its weight map (key -> file name)


def safetensors_files(path: str | os.PathLike) -> tuple[list[Path], Index | None]:
    """(the files of a safetensors file or (sharded) directory, the shards' index or None).

    A directory must hold exactly one `*.safetensors.index.json`, or no index and exactly one
    `*.safetensors` file.
    """
    path = Path(path)
    if path.is_file():
        return [path], None
    if not path.is_dir():
        raise ConversionError(f"no safetensors file or directory at {path}")
    indexes = _preferred(sorted(path.glob(f"*{INDEX_SUFFIX}")), INDEX_SUFFIX)
    if len(indexes) > 1:
        raise ConversionError(
            f"{path} holds several safetensors indexes: {[p.name for p in indexes]}"
        )
    if indexes:
        weight_map = _weight_map(indexes[0])
        files = sorted({indexes[0].parent / name for name in weight_map.values()})
        absent = [str(f) for f in files if not f.is_file()]
        if absent:
            raise ConversionError(
                format_keys(f"shard files named by {indexes[0]} are missing", absent)
            )
        return files, (indexes[0], weight_map)
    files = _preferred(sorted(path.glob("*.safetensors")), ".safetensors")
    if len(files) != 1:
        raise ConversionError(
            f"{path} must hold one *.safetensors file or an index; found {[p.name for p in files]}"
        )
    return files, None


def _preferred(files: list[Path], suffix: str) -> list[Path]:
    """Of several candidates, the one with a standard weights name (not a `.fp16` variant)."""
    standard = [f for f in files if f.name.removesuffix(suffix) in STANDARD_BASES]
    return standard if len(files) > 1 and len(standard) == 1 else files


def _weight_map(index: Path) -> dict[str, str]:
    try:
        return json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError) as err:
        raise ConversionError(f"{index} is not a safetensors index (no weight_map): {err}") from err


def _check_index(index: Index, key_file: Mapping[str, Path]) -> None:
    """The index's weight map names exactly the stored keys, each in its file."""
    index, weight_map = index
    listed_not_stored = [k for k, f in weight_map.items() if key_file.get(k) != index.parent / f]
    stored_not_listed = key_file.keys() - weight_map.keys()
    if listed_not_stored or stored_not_listed:
        parts = [f"{index} disagrees with its shard files:"]
        if listed_not_stored:
            parts.append(format_keys("keys listed but not in the named file", listed_not_stored))
        if stored_not_listed:
            parts.append(format_keys("keys stored but not listed", stored_not_listed))
        raise ConversionError("\n".join(parts))


class SafetensorsReader:
    """Lazy view of a safetensors file or sharded directory: shapes without loading data.

    Each file is opened once, when the reader is made, and stays open until `close`.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        files, index = safetensors_files(self.path)
        self._handles: dict[Path, object] = {}
        self.key_file: dict[str, Path] = {}
        self._info: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        try:
            for file in files:
                self._handles[file] = handle = _open(file).__enter__()
                for key in handle.keys():  # noqa: SIM118 (safe_open is not iterable)
                    if key in self.key_file:
                        raise ConversionError(
                            f"tensor {key} appears in both {self.key_file[key]} and {file}"
                        )
                    self.key_file[key] = file
                    self._info[key] = _shape_and_dtype(handle, key, file)
            if index is not None:
                _check_index(index, self.key_file)
        except BaseException:
            self.close()
            raise

    def keys(self) -> list[str]:
        return list(self.key_file)

    def __iter__(self) -> Iterator[str]:
        return iter(self.key_file)

    def __len__(self) -> int:
        return len(self.key_file)

    def dtype(self, key: str) -> torch.dtype:
        return self._info[key][1]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: v[0] for k, v in self._info.items()}

    def get(self, key: str) -> torch.Tensor:
        try:
            return self._handles[self.key_file[key]].get_tensor(key)
        except SafetensorError as err:
            raise ConversionError(f"cannot read {key} from {self.key_file[key]}: {err}") from err

    def load_all(self) -> dict[str, torch.Tensor]:
        return {k: self.get(k) for k in self.key_file}

    def close(self) -> None:
        for handle in self._handles.values():
            handle.__exit__(None, None, None)
        self._handles.clear()

    def __enter__(self) -> SafetensorsReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _shape_and_dtype(handle, key: str, file: Path) -> tuple[tuple[int, ...], torch.dtype]:
    tensor_slice = handle.get_slice(key)
    dtype_name = tensor_slice.get_dtype()
    if dtype_name not in SAFETENSORS_DTYPES:
        raise ConversionError(f"{file}: tensor {key} has unsupported dtype {dtype_name}")
    return tuple(tensor_slice.get_shape()), SAFETENSORS_DTYPES[dtype_name]


def tensor_nbytes(shape: Sequence[int], dtype: torch.dtype) -> int:
    numel = 1
    for dim in shape:
        numel *= dim
    return numel * dtype.itemsize


def plan_shards(sizes: Mapping[str, int], max_shard_bytes: int) -> list[list[str]]:
    """Split keys (in order) into shards of at most `max_shard_bytes` (a bigger tensor alone)."""
    if max_shard_bytes <= 0:
        raise ConversionError(f"max shard size must be positive, got {max_shard_bytes}")
    shards: list[list[str]] = [[]]
    used = 0
    for key, size in sizes.items():
        if shards[-1] and used + size > max_shard_bytes:
            shards.append([])
            used = 0
        shards[-1].append(key)
        used += size
    return shards if shards[0] else []


def shard_file_names(base: str, num_shards: int) -> list[str]:
    if num_shards == 1:
        return [f"{base}.safetensors"]
    return [f"{base}-{i + 1:05d}-of-{num_shards:05d}.safetensors" for i in range(num_shards)]


def _storage_exclusive(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU tensor that owns its storage (safetensors refuses shared storage)."""
    tensor = tensor.detach().to("cpu").contiguous()
    if tensor.untyped_storage().nbytes() != tensor.nbytes:
        tensor = tensor.clone()
    return tensor


def write_sharded(
    out_dir: Path,
    base: str,
    shards: Sequence[Sequence[str]],
    produce: Callable[[Sequence[str]], Mapping[str, torch.Tensor]],
) -> list[Path]:
    """Write `shards` (lists of keys) into `out_dir`, one `produce(keys)` call per shard.

    One shard is in memory at a time. Several shards get `<base>.safetensors.index.json`.
    """
    names = shard_file_names(base, len(shards))
    header = {"format": "pt"}  # what transformers / diffusers expect of a torch file
    weight_map: dict[str, str] = {}
    total_size = 0
    for keys, name in zip(shards, names, strict=True):
        tensors = {k: _storage_exclusive(t) for k, t in produce(keys).items()}
        if list(tensors) != list(keys):
            raise ConversionError(f"shard {name}: produced keys differ from the planned keys")
        save_file(tensors, str(out_dir / name), metadata=header)
        total_size += sum(t.nbytes for t in tensors.values())
        weight_map.update(dict.fromkeys(keys, name))
        del tensors
    if len(names) > 1:
        index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
        (out_dir / f"{base}{INDEX_SUFFIX}").write_text(json.dumps(index, indent=2, sort_keys=True))
    return [out_dir / n for n in names]


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `out`, renamed to `out` only if the block succeeds.

    On any error the temporary directory is removed and `out` is left untouched.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConversionError(f"output {out} already exists (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
        tmp.rename(out)
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()
    else:
        tmp.rename(out)


def write_json(path: Path, obj: Mapping) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
