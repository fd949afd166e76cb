"""README "From a HunyuanVideo checkpoint", every command in order on the tiny random pipeline
folder (tests/tiny_pipelines.py): import -> shards -> stage 1 -> causal FT -> a multi-shot ar-kv
scene -> export -> export-diffusers, whose transformer in diffusers' own pipeline gives what
lct-sample gives from the export. Training runs in-process as one rank (fp32, CPU)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from data_tools.cli import main as shards_main
from data_tools.synth import SynthConfig, write_synth
from lct_train.config.store import find_conf_dir
from lct_train.convert.cli import main as convert
from lct_train.convert.model_spec import read_model_config
from lct_train.data.schema import DatasetInfo
from lct_train.sample.cli import main as sample
from lct_train.train.main import main as train
from tests.sample.hunyuan_parity import LATENT, PROMPT, SIZE, lct_sample_one_shot, relative_diff
from tests.train.inprocess import ONE_RANK_ENV, _free_port
from tests.train.torchrun import BASE, losses

pytestmark = pytest.mark.slow
STEPS = 2
PARITY = 1e-5  # issue 19: fp32 relative
SYNTH = dict(num_scenes=3, min_shots=1, max_shots=2, min_frames=2, max_frames=3, height=32,
             width=32, fps=8.0, p_continuous=0.0, max_characters=1, seed=11)
# The trainer's small CPU settings without a model preset: model_from names the architecture.
RUN = [o for o in BASE if not o.startswith("model=")]


def _train(monkeypatch, *overrides: str) -> None:
    for key, value in ONE_RANK_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MASTER_PORT", _free_port())
    assert train([*RUN, *overrides]) == 0


def _flat(path) -> torch.Tensor:
    state = load_file(str(path))
    return torch.cat([state[k].flatten().float() for k in sorted(state)])


def test_readme_hunyuan_path_on_the_tiny_pipeline(tiny_hunyuan_pipeline, tmp_path, monkeypatch):
    from diffusers import HunyuanVideoTransformer3DModel
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

    from tests.tiny_pipelines import load_diffusers_pipeline

    root = tiny_hunyuan_pipeline
    # 1. import from the pipeline root, the preset's LCT-only fields (dummy grid) as the base:
    #    an export whose architecture is no preset
    init = tmp_path / "hv-init"
    assert convert(["import-diffusers", str(root), str(init), "--base-config",
                    str(find_conf_dir() / "model" / "hunyuan-video.yaml")]) == 0
    imported = read_model_config(init)
    assert (imported.latent_channels, imported.text_dim, imported.pooled_dim) == (4, 16, 8)
    assert imported.dummy_grid == (1, 4, 4)
    assert not imported.text_rope
    assert imported.guidance_embeds
    assert imported.sampling.embedded_guidance == 6.0

    # 2. scenes -> shards with the pipeline's own VAE and text encoders, checked against the export
    write_synth(SynthConfig(**SYNTH), tmp_path / "synth")
    data = tmp_path / "scenes"
    assert shards_main(["build", str(tmp_path / "synth" / "manifest.jsonl"), str(data),
                        "--pipeline", str(root), "--model", str(init), "--area", "1024",
                        "--fps", "8", "--scenes-per-shard", "1"]) == 0
    info = DatasetInfo.read(data)
    assert (info.latent_channels, info.text_dim, info.pooled_dim) == (4, 16, 8)
    assert len(list((data / "shards").glob("*.tar"))) == SYNTH["num_scenes"]

    # 3. stage 1 from the import, its architecture read from it (model_from)
    sources = f"data.sources=[{{path: {data}}}]"
    common = [sources, "data.num_workers=0", "data.max_tokens=512", f"steps={STEPS}",
              "checkpoint.every=2"]
    s1, ft = tmp_path / "lct-s1", tmp_path / "lct-ft"
    _train(monkeypatch, "stage=lct", f"model_from={init}", f"stage.init_from={init}",
           f"run_dir={s1}", *common)
    # 4. causal FT from stage 1's newest checkpoint, its recorded architecture
    _train(monkeypatch, "stage=causal_ft", f"model_from={s1}", f"stage.init_run={s1}",
           f"run_dir={ft}", *common)
    for run_dir in (s1, ft):
        assert (run_dir / "checkpoints" / "step-00000002").is_dir()
        run_losses = losses(run_dir)
        assert sorted(run_losses) == [1, 2]
        assert all(math.isfinite(v) for v in run_losses.values())
        recorded = json.loads((run_dir / "checkpoints" / "step-00000002" / "lct_meta.json")
                              .read_text())["config"]["model"]
        assert {k: v for k, v in recorded.items() if k != "attn_backend"} == {
            k: v for k, v in imported.to_dict().items() if k != "attn_backend"}

    # 5. a multi-shot scene with a global prompt, shot by shot with the KV cache
    scene = tmp_path / "story.yaml"
    scene.write_text(json.dumps({
        "global_prompt": "Character 1: a red fox. [Environment] snow.", "size": SIZE,
        "shots": [{"prompt": "Character 1 runs through the snow.", "cut": True},
                  {"prompt": "Character 1 stops and looks back.", "cut": True}]}))
    story = tmp_path / "out" / "story"
    assert sample(["scene", str(scene), "--ckpt", str(ft), "--pipeline", str(root), "--mode",
                   "ar-kv", "--steps", "2", "--no-progress", "--out", str(story)]) == 0
    for shot in range(2):
        latent = load_file(str(story / f"shot_{shot:03d}.safetensors"))["latent"]
        assert tuple(latent.shape) == LATENT
        assert torch.isfinite(latent).all()

    # 6. back to diffusers
    export, back_dir = tmp_path / "lct-ft-export", tmp_path / "lct-ft-diffusers"
    assert convert(["export", str(ft), str(export), "--weights", "ema"]) == 0
    assert convert(["export-diffusers", str(export), str(back_dir)]) == 0
    trained, start = _flat(export / "model.safetensors"), _flat(init / "model.safetensors")
    assert trained.shape == start.shape
    assert not torch.equal(trained, start)
    back = HunyuanVideoTransformer3DModel.from_pretrained(back_dir, local_files_only=True).eval()
    noise = torch.randn(LATENT, generator=torch.Generator().manual_seed(3))
    got = lct_sample_one_shot(export, tmp_path / "one-shot", noise, steps=STEPS,
                              tools=("--pipeline", str(root), "--no-progress"))
    pipe = load_diffusers_pipeline(root)
    pipe.transformer = back
    pipe.set_progress_bar_config(disable=True)
    _, frames, h, w = noise.shape
    # the template without its crop_start (the real tokenizer's): diffusers counts it itself
    template = {"template": DEFAULT_PROMPT_TEMPLATE["template"]}
    want = pipe(prompt=PROMPT, prompt_template=template, latents=noise[None],
                num_inference_steps=STEPS, guidance_scale=imported.sampling.embedded_guidance,
                height=h * 8, width=w * 8, num_frames=(frames - 1) * 4 + 1,
                output_type="latent", return_dict=False)[0][0]
    assert relative_diff(got, want) <= PARITY
