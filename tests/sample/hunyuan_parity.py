"""One shot of a tiny random HunyuanVideo sampled two ways from the same noise and prompt
embeddings: by ``lct-sample scene`` (a scene file without a global prompt, the shot's noise
from a file, the imported model's preset settings) and by diffusers' ``HunyuanVideoPipeline``
(``latents=noise, output_type="latent"``, the embeddings passed directly). Test harness of
tests/sample/test_diffusers_parity.py; a ``--pipeline DIR`` run (real encoders) can reuse
``diffusers_one_shot`` with the pipeline's own ``encode_prompt``."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lct_train.convert.cli import main as convert
from lct_train.data.text_encoders import TinyTextEncoder
from lct_train.sample.cli import main as sample
from tests.convert.tiny_hunyuan import make_tiny_diffusers

PROMPT = "Character 1, a red fox, runs through the snow."
SIZE = {"frames": 5, "height": 32, "width": 48}  # tiny-hunyuan codec (4x temporal, 8x spatial)
LATENT = (4, 2, 4, 6)  # [C, F, h, w] of SIZE: a 2 x 2 x 3 patch grid
TEXT_PAD = 3  # padded rows the diffusers side sees masked out, as the Llama encoder pads
TOOLS = ["--codec", "tiny-hunyuan", "--text-encoder", "tiny", "--no-progress"]


def tiny_transformer(seed: int = 0):
    """The tiny random diffusers transformer, with the `tiny` text encoder's widths."""
    enc = TinyTextEncoder()
    return make_tiny_diffusers(seed, text_embed_dim=enc.text_dim,
                               pooled_projection_dim=enc.pooled_dim)


def import_transformer(model, root: Path) -> Path:
    """``lct-convert import-diffusers`` of ``model`` saved in the diffusers layout."""
    model.save_pretrained(root / "transformer", safe_serialization=True)
    assert convert(["import-diffusers", str(root / "transformer"), str(root / "lct")]) == 0
    return root / "lct"


def lct_sample_one_shot(ckpt: Path, out: Path, noise: torch.Tensor, *, prompt: str = PROMPT,
                        global_prompt: str | None = None, args: tuple[str, ...] = (),
                        tools: tuple[str, ...] = tuple(TOOLS), **scene) -> torch.Tensor:
    """``lct-sample scene`` of a one-shot scene starting at ``noise``; the shot's latent.
    ``tools``: the codec and text encoder options (``--pipeline DIR`` once it exists)."""
    out.mkdir(parents=True, exist_ok=True)
    save_file({"noise": noise.contiguous()}, str(out / "noise.safetensors"))
    data = {"size": SIZE, **scene,
            "shots": [{"prompt": prompt, "cut": False, "noise": "noise.safetensors"}]}
    if global_prompt is not None:
        data["global_prompt"] = global_prompt
    (out / "scene.yaml").write_text(json.dumps(data))
    rc = sample(["scene", str(out / "scene.yaml"), "--ckpt", str(ckpt), "--out",
                 str(out / "result"), *tools, *args])
    assert rc == 0
    return load_file(str(out / "result" / "shot_000.safetensors"))["latent"]


def prompt_embeds(prompt: str = PROMPT) -> dict[str, torch.Tensor]:
    """The `tiny` encoder's embeddings of ``prompt`` as diffusers takes them (batch of one,
    zero padding masked out)."""
    batch = TinyTextEncoder().encode([prompt])
    valid = batch.valid(0).float()
    tokens = torch.cat([valid, torch.zeros(TEXT_PAD, valid.shape[1])])
    mask = torch.zeros(1, tokens.shape[0], dtype=torch.long)
    mask[:, : valid.shape[0]] = 1
    return {"prompt_embeds": tokens[None], "prompt_attention_mask": mask,
            "pooled_prompt_embeds": batch.pooled[:1].float()}


def diffusers_pipeline(transformer, shift: float):
    from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline

    return HunyuanVideoPipeline(text_encoder=None, tokenizer=None, transformer=transformer,
                                vae=None, scheduler=FlowMatchEulerDiscreteScheduler(shift=shift),
                                text_encoder_2=None, tokenizer_2=None)


@torch.no_grad()
def diffusers_one_shot(transformer, noise: torch.Tensor, *, steps: int, shift: float,
                       embedded_guidance: float, prompt: str = PROMPT,
                       embeds: dict | None = None) -> torch.Tensor:
    """``HunyuanVideoPipeline(..., latents=noise, output_type="latent")``: the shot's latent.
    ``embeds``: prompt_embeds / pooled_prompt_embeds / prompt_attention_mask (default: the
    `tiny` encoder's of ``prompt``; a real pipeline's ``encode_prompt`` output fits too)."""
    pipe = diffusers_pipeline(transformer, shift)
    pipe.set_progress_bar_config(disable=True)
    _, frames, h, w = noise.shape
    out = pipe(**(embeds or prompt_embeds(prompt)), latents=noise[None], num_inference_steps=steps,
               guidance_scale=embedded_guidance, height=h * 8, width=w * 8,
               num_frames=(frames - 1) * 4 + 1, output_type="latent", return_dict=False)[0]
    return out[0]


def relative_diff(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want.float()).abs().max() / want.float().abs().max())
