"""What ``lct-sample`` loads before it samples: the model (``--ckpt``, ``--lora``), the text
encoder and codec (``--pipeline`` and/or ``--text-encoder`` / ``--codec``), and for ``--sp N``
the torchrun world as one sequence-parallel group; checked against each other, each failure a
``SamplingError`` naming the option."""

from __future__ import annotations

import os

from lct_train.core.dtypes import dtype_of
from lct_train.core.errors import ConfigError
from lct_train.data.encoder_family import check_encoder_family, kind_of
from lct_train.sample.checkpoint_io import load_model
from lct_train.sample.pipeline import Toolkit
from lct_train.sample.prompts import PromptEncoder
from lct_train.sample.sampler import SamplingError


def start_sp(sp_degree: int, device: str):
    """The torchrun world as one SP group for ``--sp N`` (``parallel.dist``; on CUDA each rank
    is bound to cuda:LOCAL_RANK, where ``load_toolkit`` puts the model and codec)."""
    from lct_train.config.schema import ParallelConfig
    from lct_train.parallel.dist import init_distributed

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size != sp_degree:
        raise SamplingError(f"--sp {sp_degree} needs torchrun --nproc_per_node={sp_degree} "
                            f"(world size is {world_size})")
    try:
        return init_distributed(ParallelConfig(device=device, dp_shard=1, sp_degree=sp_degree))
    except ConfigError as exc:  # e.g. cuda asked for where none is visible
        raise SamplingError(f"--device {device} with --sp {sp_degree}: {exc}") from exc


def load_toolkit(opts: dict, progress: bool, sp_degree: int = 1) -> Toolkit:
    """The model, text encoder and codec of the CLI's model options ``opts`` on their device;
    with ``sp_degree > 1`` also the sequence-parallel group (then rank 0 alone writes)."""
    from lct_train.data.codecs import build_codec
    from lct_train.data.text_encoders import build_text_encoder

    needed = ("ckpt",) if opts.get("pipeline") else ("ckpt", "codec", "text_encoder")
    missing = [f"--{k.replace('_', '-')}" for k in needed if not opts[k]]
    if missing:
        raise SamplingError(f"missing {', '.join(missing)} (give it, or init the pool with it)")
    device = opts["device"]
    if sp_degree > 1 and device == "cuda":  # each rank on its own GPU, as init_distributed binds
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    loaded = load_model(opts["ckpt"], weights=opts["weights"], mask=opts["mask"],
                        window=opts["window"], device=device, dtype=dtype_of(opts["dtype"]),
                        lora=opts["lora"], lora_scale=float(opts["lora_scale"]))
    if sp_degree < 1 or loaded.config.num_heads % sp_degree:
        raise SamplingError(f"--sp {sp_degree} does not divide the model's "
                            f"{loaded.config.num_heads} attention heads")
    text_encoder, codec = pipeline_parts(opts, device)
    given = f"--text-encoder {opts['text_encoder']}" if opts["text_encoder"] else f"--pipeline {opts['pipeline']}"
    try:
        text_encoder = text_encoder or build_text_encoder(opts["text_encoder"], device=device)
    except (ValueError, OSError) as exc:  # an unknown spec, or a folder that does not load
        raise SamplingError(f"{given}: {exc}") from exc
    try:
        codec = codec or build_codec(opts["codec"], device=device)
    except (ValueError, OSError) as exc:
        raise SamplingError(f"--codec {opts['codec']}: {exc}") from exc
    try:  # the family first: HunyuanVideo's and Wan2.1's encoders have the same widths
        check_encoder_family(loaded.config, kind_of(text_encoder.spec()), kind_of(codec.spec()),
                             source=encoders_named(opts), model_name=f"--ckpt {opts['ckpt']}")
    except ValueError as exc:
        raise SamplingError(str(exc)) from exc
    try:
        prompts = PromptEncoder(text_encoder, loaded.config)
    except ValueError as exc:  # a width the model cannot take
        raise SamplingError(f"{given}: {exc}") from exc
    sp = start_sp(sp_degree, opts["device"]).sp if sp_degree > 1 else None
    writes = sp is None or sp.rank == 0
    return Toolkit(loaded, codec, prompts, progress=progress and writes, fps=int(opts["fps"]),
                   sp=sp, writes=writes)


def encoders_named(opts: dict) -> str:
    """The options that gave the text encoder and codec, for messages."""
    named = [f"--{k.replace('_', '-')} {opts[k]}" for k in ("pipeline", "text_encoder", "codec") if opts.get(k)]
    return " ".join(named)


def pipeline_parts(opts: dict, device: str):
    """(text encoder, codec) of ``--pipeline``: the text encoder in the model's dtype, the codec in
    ``--vae-dtype`` (default: the pipeline family's, fp32 for Wan, else the model's); ``None`` for
    a part given with ``--text-encoder`` / ``--codec`` (or when there is no pipeline)."""
    if not opts.get("pipeline"):
        return None, None
    from lct_train.data.pipeline_dir import load_pipeline

    try:
        vae_dtype = dtype_of(opts["vae_dtype"]) if opts.get("vae_dtype") else None
        return load_pipeline(opts["pipeline"], device=device, dtype=dtype_of(opts["dtype"]),
                             text_encoder=not opts["text_encoder"], codec=not opts["codec"], vae_dtype=vae_dtype)
    except (ValueError, OSError) as exc:
        raise SamplingError(str(exc)) from exc
