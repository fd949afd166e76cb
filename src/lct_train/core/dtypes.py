"""The one name -> torch dtype table; each entry point picks the names it accepts."""

from __future__ import annotations

import torch

DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}
ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32",
           "float": "float32"}

TRAIN_DTYPES = ("float32", "bfloat16", "float16")  # parallel.param_dtype / reduce_dtype
SAMPLE_DTYPES = ("float32", "bfloat16", "float64")  # lct-sample --dtype
CONVERT_DTYPES = (*TRAIN_DTYPES, *ALIASES)  # lct-convert --dtype


def dtype_of(name: str) -> torch.dtype:
    """The torch dtype of a table name or alias (``bf16``, ``fp32``, ...)."""
    return DTYPES[ALIASES.get(name, name)]
