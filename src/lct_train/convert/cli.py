"""`lct-convert`: the command line of the conversions (one process, no torchrun).

    lct-convert export CKPT OUT            DCP training checkpoint -> model.safetensors + config.json
    lct-convert init SRC OUT               safetensors export or checkpoint -> next stage's init
    lct-convert import-diffusers SRC OUT   diffusers HunyuanVideo / Wan transformer -> LCT export
    lct-convert export-diffusers SRC OUT   LCT export -> diffusers HunyuanVideo / Wan transformer
    lct-convert export-lora CKPT OUT       LoRA run checkpoint -> diffusers LoRA file (--merge:
                                           merged into its base, an LCT export)
    lct-convert verify PATH [--reference REF]

On bad input every command exits with status 2 (``core.exits``) and a one-line message naming
the offending keys or files, leaving no output behind.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

from lct_train.convert.dcp_export import export_checkpoint
from lct_train.convert.diffusers_io import export_diffusers, import_diffusers
from lct_train.convert.key_plan import KeyRule, convert_with_plan
from lct_train.convert.lora_export import export_lora, merge_lora_export
from lct_train.convert.model_spec import (
    CONFIG_FILE,
    EXPORT_INFO_FILE,
    WEIGHTS_BASE,
    config_file,
    expected_shapes,
    island_keys,
    parse_dtype,
    parse_model_config,
    read_model_config,
)
from lct_train.convert.verify import verify
from lct_train.core import exits
from lct_train.core.checkpoint_layout import WEIGHT_SETS, holds_checkpoint
from lct_train.core.errors import ConversionError
from lct_train.core.safetensors_io import DEFAULT_MAX_SHARD_BYTES, SafetensorsReader

SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
}


def parse_size(text: str) -> int:
    """`5GB`, `500MiB`, `1000000` -> bytes."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", text)
    if match is None or match.group(2).upper() not in SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 5GB, 500MiB)")
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2).upper()])


def one_line(message: str) -> str:
    """A multi-line message (a title, then listed keys) as one line: `title: key; key`."""
    message = re.sub(r":\n\s*", ": ", message.strip())
    return re.sub(r"\n\s*", "; ", message)


def parse_overrides(items: list[str]) -> dict:
    """`key=value` items (values parsed as YAML: true, 4, [1, 2, 2]) -> dict."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConversionError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _load_base_config(path: str | None):
    if path is None:
        return None
    data = yaml.safe_load(Path(path).read_text())
    return parse_model_config(data, path)


def _output_options(args) -> dict:
    """The options every writing command shares (`_add_output_args`), as keyword arguments."""
    return {
        "dtype": parse_dtype(args.dtype),
        "max_shard_bytes": args.max_shard_size,
        "overwrite": args.overwrite,
    }


def cmd_export(args) -> None:
    _export_checkpoint(args, args.checkpoint)


def _export_checkpoint(args, source: str) -> None:
    out = export_checkpoint(
        source,
        args.out,
        weights=args.weights,
        **_output_options(args),
        config_overrides=parse_overrides(args.set),
    )
    print(f"wrote {out}")


def cmd_init(args) -> None:
    """Init weights of the next stage: a checkpoint is exported; an export is re-checked/copied
    (with its `lct_export.json`: the mask and window the sampler reads)."""
    if holds_checkpoint(args.source):
        _export_checkpoint(args, args.source)
        return
    if not Path(args.source).exists():
        raise ConversionError(f"{args.source} does not exist")
    if args.weights is not None:
        raise ConversionError(
            f"--weights picks a weight set of a training checkpoint; {args.source} is not one "
            "(an export holds one set of weights: leave --weights out)"
        )
    cfg = read_model_config(args.source)
    cfg = parse_model_config({**cfg.to_dict(), **parse_overrides(args.set)}, "--set overrides")
    json_files = {CONFIG_FILE: cfg.to_dict()}
    info_file = config_file(args.source).parent / EXPORT_INFO_FILE
    if info_file.is_file():
        info = json.loads(info_file.read_text())
        json_files[EXPORT_INFO_FILE] = info | ({"dtype": str(parse_dtype(args.dtype))} if args.dtype else {})
    with SafetensorsReader(args.source) as reader:
        convert_with_plan(
            [KeyRule(k, (k,)) for k in reader],
            reader,
            args.out,
            WEIGHTS_BASE,
            expected=expected_shapes(cfg),
            source_name=f"export {args.source}",
            target_name="the LCT model",
            json_files=json_files,
            islands=island_keys(cfg),
            **_output_options(args),
        )
    print(f"wrote {args.out}")


def cmd_import_diffusers(args) -> None:
    cfg = import_diffusers(
        args.source,
        args.out,
        base=_load_base_config(args.base_config),
        **_output_options(args),
    )
    detail = f"text_rope={cfg.text_rope}" if hasattr(cfg, "text_rope") else f"family={cfg.family}"
    print(f"wrote {args.out} ({detail})")


def cmd_export_diffusers(args) -> None:
    export_diffusers(
        args.source,
        args.out,
        **_output_options(args),
    )
    print(f"wrote {args.out}")


def cmd_export_lora(args) -> None:
    if args.merge:
        out = merge_lora_export(args.checkpoint, args.out, base=args.base,
                                **_output_options(args))
    else:
        if args.base is not None:
            raise ConversionError("--base is the base to merge into: it needs --merge")
        out = export_lora(args.checkpoint, args.out, dtype=parse_dtype(args.dtype),
                          overwrite=args.overwrite)
    print(f"wrote {out}")


def cmd_verify(args) -> int:
    report = verify(
        args.path, args.reference, device=args.device, dtype=parse_dtype(args.dtype), rtol=args.rtol
    )
    print("\n".join(report.lines()))
    if args.json:
        print(json.dumps(report.__dict__ | {"ok": report.ok}, indent=2))
    if not report.ok:  # a verdict, not a refusal (README "Exit codes")
        print(f"lct-convert verify: verification of {args.path} failed", file=sys.stderr)
        return exits.VERDICT_NO
    return exits.OK


def _add_output_args(parser: argparse.ArgumentParser, weights: bool = False) -> None:
    parser.add_argument("out", help="output directory (written atomically)")
    parser.add_argument("--dtype", help="cast floating-point tensors: bf16, fp16 or fp32; the "
                        "model's fp32 islands (Wan: modulation tables, norm2, time_embedder) stay "
                        "fp32, as diffusers' save_pretrained keeps them")
    parser.add_argument(
        "--max-shard-size",
        type=parse_size,
        default=DEFAULT_MAX_SHARD_BYTES,
        help="largest safetensors shard, e.g. 5GB (default 5GiB)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    if weights:
        parser.add_argument(
            "--weights",
            choices=WEIGHT_SETS,
            help="DCP weight set (default: ema when the checkpoint has it, else model)",
        )
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a ModelConfig field of the output, e.g. text_rope=true",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lct-convert", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("export", help="DCP training checkpoint -> consolidated safetensors")
    p.add_argument("checkpoint", help="step directory, or a run / checkpoints dir (latest step)")
    _add_output_args(p, weights=True)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("init", help="initial weights of a run from an export or a checkpoint")
    p.add_argument("source", help="LCT export directory / safetensors, or a DCP checkpoint")
    _add_output_args(p, weights=True)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("import-diffusers", help="diffusers HunyuanVideo transformer -> LCT export")
    p.add_argument("source", help="diffusers HunyuanVideoTransformer3DModel folder, or a "
                   "HunyuanVideoPipeline folder (model_index.json; its transformer/ is imported, "
                   "the folder lct-shards build --pipeline reads)")
    _add_output_args(p)
    p.add_argument(
        "--base-config",
        help="model config YAML/JSON of the same family for non-diffusers fields (dummy_grid, "
        "shot_gap)",
    )
    p.set_defaults(func=cmd_import_diffusers)

    p = sub.add_parser("export-diffusers", help="LCT export -> diffusers HunyuanVideo transformer")
    p.add_argument("source", help="LCT export directory (config.json + model*.safetensors)")
    _add_output_args(p)
    p.set_defaults(func=cmd_export_diffusers)

    p = sub.add_parser("export-lora", help="LoRA checkpoint -> diffusers LoRA file or merged")
    p.add_argument("checkpoint", help="step directory, or a run / checkpoints dir (latest step)")
    _add_output_args(p)
    p.add_argument("--merge", action="store_true",
                   help="write the base with the adapters merged (an LCT export)")
    p.add_argument("--base", help="base weights to merge into (default: the run's recorded base)")
    p.set_defaults(func=cmd_export_lora)

    p = sub.add_parser("verify", help="check a converted checkpoint (and compare to a reference)")
    p.add_argument("path", help="LCT export or diffusers transformer directory")
    p.add_argument("--reference", help="LCT export or diffusers directory to compare outputs with")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", help="compute dtype of the output comparison")
    p.add_argument("--rtol", type=float, help="max |out - ref| / max |ref| (default per dtype)")
    p.add_argument("--json", action="store_true", help="also print the report as JSON")
    p.set_defaults(func=cmd_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
    except (ConversionError, OSError) as err:  # bad input or environment: exit 2
        return exits.refuse(f"lct-convert {args.command}: error: {one_line(str(err))}")
    return exits.OK if status is None else status


if __name__ == "__main__":
    sys.exit(main())
