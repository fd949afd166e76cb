"""A diffusers pipeline folder (``model_index.json`` + one sub-folder per part) -> the text
encoder and the codec, loaded as diffusers loads them: each part with the library and class
``model_index.json`` names, from its own sub-folder, offline.

Supported (``FAMILIES``):

- ``HunyuanVideoPipeline`` (``vae/``: AutoencoderKLHunyuanVideo; ``text_encoder/`` +
  ``tokenizer/``: Llama; ``text_encoder_2/`` + ``tokenizer_2/``: CLIP-L), text as
  ``hunyuan_text``;
- ``WanPipeline`` (``vae/``: AutoencoderKLWan, Wan2.1's or Wan2.2's; ``text_encoder/`` +
  ``tokenizer/``: umT5), text as ``wan_text``. Its ``transformer/`` is ``lct-convert
  import-diffusers``' (Wan2.2-A14B's second expert, ``transformer_2/``, is out of scope).

The VAE's dtype: a family may declare its own (``PipelineFamily.vae_dtype``: float32 for Wan, as
diffusers' Wan docs and the official Wan code run it; HunyuanVideo's follows the requested dtype);
an explicit ``vae_dtype`` (``--vae-dtype``) overrides both.

One fix over diffusers:
transformers 5's ``LlamaTokenizer(Fast)`` replaces the byte-level pre-tokenizer of a Llama 3
``tokenizer.json`` (HunyuanVideo's) with a SentencePiece one and so changes the tokens
(transformers issue 45488); such a tokenizer is loaded as ``PreTrainedTokenizerFast``, which keeps
``tokenizer.json`` as written (the tokens transformers 4 and the source model use).

Every failure is one line (:class:`PipelineDirError`, a ``ValueError``) naming the folder or part.
"""

from __future__ import annotations

import importlib
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

MODEL_INDEX = "model_index.json"
LIBRARIES = ("diffusers", "transformers")
BYTE_LEVEL_FILE = "tokenizer.json"


def _import(path: str):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class PipelineFamily:
    """What this loader takes from one diffusers pipeline class."""

    pipeline: str  # model_index.json's _class_name
    name: str  # for messages
    text_kind: str  # the --text-encoder kind that loads the text parts alone
    text_parts: dict  # part -> (library, class) used when the folder has no model_index.json
    tokenizer_of: dict  # text encoder part -> its tokenizer part
    vae: str  # the vae/ class
    text_encoder_cls: str  # "module:Class", built as cls(**parts, spec=spec, **opts)
    codec_cls: str  # "module:Class", built as cls(vae folder, device=, dtype=)
    # the VAE's own dtype, over the requested one (None: the requested one); a --vae-dtype overrides it
    vae_dtype: torch.dtype | None = None

    def codec_dtype(self, dtype: torch.dtype, vae_dtype: torch.dtype | None = None) -> torch.dtype:
        """The VAE's weights dtype: ``vae_dtype`` when the user names one, else the family's, else ``dtype``."""
        return vae_dtype or self.vae_dtype or dtype

    def make_text_encoder(self, parts: dict, spec: dict, **opts):
        return _import(self.text_encoder_cls)(**parts, spec=spec, **opts)

    def make_codec(self, folder: str, *, device: str, dtype: torch.dtype):
        return _import(self.codec_cls)(folder, device=device, dtype=dtype)


HUNYUAN = PipelineFamily(
    "HunyuanVideoPipeline", "HunyuanVideo", "hunyuan-video",
    {"text_encoder": ("transformers", "LlamaModel"), "tokenizer": ("transformers", "PreTrainedTokenizerFast"),
     "text_encoder_2": ("transformers", "CLIPTextModel"), "tokenizer_2": ("transformers", "CLIPTokenizer")},
    {"text_encoder": "tokenizer", "text_encoder_2": "tokenizer_2"}, "AutoencoderKLHunyuanVideo",
    "lct_train.data.hunyuan_text:HunyuanVideoTextEncoder", "lct_train.data.codecs:HunyuanVideoCodec")
WAN = PipelineFamily(
    "WanPipeline", "Wan", "umt5",
    {"text_encoder": ("transformers", "UMT5EncoderModel"), "tokenizer": ("transformers", "AutoTokenizer")},
    {"text_encoder": "tokenizer"}, "AutoencoderKLWan",
    "lct_train.data.wan_text:UMT5TextEncoder", "lct_train.data.codecs:WanCodec",
    vae_dtype=torch.float32)  # as diffusers' Wan docs and the official Wan code: fp32 decodes better
FAMILIES = {f.pipeline: f for f in (HUNYUAN, WAN)}
FAMILY_OF_KIND = {f.text_kind: f for f in FAMILIES.values()}


class PipelineDirError(ValueError):
    """A pipeline folder that cannot be used (one line, naming the folder or part)."""


def read_model_index(root: str | Path, flag: str = "--pipeline") -> dict:
    """``root/model_index.json`` of a supported pipeline (``FAMILIES``); another is refused."""
    root = Path(root)
    file = root / MODEL_INDEX
    if not root.is_dir():
        raise PipelineDirError(f"{flag} {root}: no such folder")
    if not file.is_file():
        raise PipelineDirError(f"{flag} {root}: not a diffusers pipeline folder (no {MODEL_INDEX})")
    try:
        index = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PipelineDirError(f"{file} is not valid JSON: {exc}") from None
    name = index.get("_class_name") if isinstance(index, dict) else None
    if name not in FAMILIES:
        raise PipelineDirError(f"{file}: a diffusers {name} folder is not supported by {flag} "
                               f"(it loads {' and '.join(FAMILIES)})")
    return index


def family_of(index: dict) -> PipelineFamily:
    return FAMILIES[index["_class_name"]]


def _part_class(root: Path, index: dict | None, part: str, family: PipelineFamily) -> tuple[str, str]:
    if index is None:
        return family.text_parts[part]
    entry = index.get(part)
    if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(v, str) for v in entry)):
        raise PipelineDirError(f"{root / MODEL_INDEX} names no {part} (got {entry!r})")
    if entry[0] not in LIBRARIES:
        raise PipelineDirError(f"{root / MODEL_INDEX}: {part} is a {entry[0]}.{entry[1]}; only "
                               f"{' and '.join(LIBRARIES)} classes load offline here")
    return entry[0], entry[1]


def _part_dir(root: Path, index: dict | None, part: str, family: PipelineFamily) -> Path:
    folder = root / part
    if folder.is_dir():
        return folder
    encoder = next((enc for enc, tok in family.tokenizer_of.items() if tok == part), None)
    if encoder is not None and (root / encoder).is_dir():
        raise PipelineDirError(f"{folder} is missing: the tokenizer of {root / encoder} must be "
                               f"beside it, in {part}/")
    named = " (model_index.json names it)" if index is not None else ""
    raise PipelineDirError(f"{folder} is missing: a {family.name} folder needs {part}/{named}")


def _byte_level(folder: Path) -> bool:
    file = folder / BYTE_LEVEL_FILE
    if not file.is_file():
        return False
    pre = json.loads(file.read_text()).get("pre_tokenizer") or {}
    return "ByteLevel" in json.dumps(pre)


@contextmanager
def _quiet_loading():
    """No "Loading weights" progress bars of transformers (a CLI's stderr stays its own)."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def load_part(root: str | Path, index: dict | None, part: str, dtype: torch.dtype | None = None,
              family: PipelineFamily = HUNYUAN):
    """One part from ``root/part`` with its named class (``from_pretrained``, offline)."""
    root = Path(root)
    library, name = _part_class(root, index, part, family)
    folder = _part_dir(root, index, part, family)
    if name.startswith("LlamaTokenizer") and _byte_level(folder):
        name = "PreTrainedTokenizerFast"  # see the module docstring: keeps Llama 3's tokens
    cls = getattr(importlib.import_module(library), name, None)
    if cls is None:
        raise PipelineDirError(f"{root / MODEL_INDEX}: {part} names {library}.{name}, which this "
                               f"{library} does not have")
    kwargs = {"local_files_only": True}
    if dtype is not None and library == "transformers" and not part.startswith("tokenizer"):
        kwargs["dtype"] = dtype
    try:
        with _quiet_loading():
            return cls.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineDirError(f"{folder}: cannot load {library}.{name}: {reason}") from None


def load_text_encoder(root: str | Path, *, kind: str = "hunyuan-video", device: str = "cpu",
                      dtype: torch.dtype = torch.float32, index: dict | None = None, flag: str | None = None,
                      **opts):
    """The text encoder(s) of the folder ``root`` (a pipeline folder, or one holding the
    family's ``text_encoder/`` + ``tokenizer/`` folders): ``kind`` ``hunyuan-video`` (Llama +
    CLIP-L) or ``umt5`` (Wan); a pipeline folder's own family when its ``index`` is given."""
    from lct_train.core.dtypes import DTYPES

    root = Path(root)
    family = FAMILY_OF_KIND[kind] if index is None else family_of(index)
    flag = flag or f"--text-encoder {family.text_kind}:"
    if index is None and (root / MODEL_INDEX).is_file():
        index = read_model_index(root, flag)
        if family_of(index) is not family:
            raise PipelineDirError(f"{flag}{root} is a {index['_class_name']} folder; {family.text_kind}: "
                                   f"takes a {family.pipeline} one")
    if not root.is_dir():
        raise PipelineDirError(f"{flag}{root}: no such folder")
    parts = {part: load_part(root, index, part, dtype, family) for part in family.text_parts}
    for part in family.tokenizer_of:
        parts[part] = parts[part].to(device)
    dtype_name = next(k for k, v in DTYPES.items() if v == dtype)
    spec = {"kind": family.text_kind, "path": str(root), "dtype": dtype_name}
    return family.make_text_encoder(parts, spec, **opts)


def load_codec(root: str | Path, index: dict, *, device: str = "cpu", dtype: torch.dtype = torch.float32,
               vae_dtype: torch.dtype | None = None):
    """The ``vae/`` of a pipeline folder as its family's codec (tiled), in
    ``family.codec_dtype(dtype, vae_dtype)``."""
    root = Path(root)
    family = family_of(index)
    library, name = _part_class(root, index, "vae", family)
    if name != family.vae:
        raise PipelineDirError(f"{root / MODEL_INDEX}: vae is a {library}.{name}; a {family.name} "
                               f"pipeline's is {family.vae}")
    folder = _part_dir(root, index, "vae", family)
    try:
        return family.make_codec(str(folder), device=device, dtype=family.codec_dtype(dtype, vae_dtype))
    except (OSError, ValueError) as exc:
        raise PipelineDirError(f"{folder}: cannot load {name}: {str(exc).strip().splitlines()[0]}") from None


def load_pipeline(root: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32,
                  text_encoder: bool = True, codec: bool = True, vae_dtype: torch.dtype | None = None):
    """``(text encoder, codec)`` of the pipeline folder ``root`` (``None`` for a part not asked
    for: one given separately with ``--text-encoder`` / ``--vae``); the text encoder in ``dtype``,
    the VAE in ``vae_dtype`` if given, else the family's VAE dtype, else ``dtype``."""
    index = read_model_index(root)
    enc = load_text_encoder(root, device=device, dtype=dtype, index=index, flag="--pipeline ") if text_encoder else None
    vae = load_codec(root, index, device=device, dtype=dtype, vae_dtype=vae_dtype) if codec else None
    return enc, vae
