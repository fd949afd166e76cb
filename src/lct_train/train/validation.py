"""In-training validation (``eval.every`` > 0; docs/eval.md), the pattern of torchtitan's Flux
validator: a fixed held-out set, fixed timesteps and noise, every rank taking part.

* **Loss**: the first ``eval.scenes`` held-out scenes (by key), one scene per forward; rank
  ``r`` takes scenes ``r, r + dp, ...`` and every rank runs the same number of forwards (a
  rank short of scenes repeats scene 0 with weight 0), so FSDP's collectives line up; the
  ranks of a sequence-parallel group take the same scene, each its slice of it. Shot
  ``k`` is noised to ``eval.timesteps[k % len]`` with noise seeded by ``(eval.seed, key)``;
  the sum and shot count are all-reduced: the mean over every held-out shot.
* **Sample**: every rank generates the same joint-mode scene from the prompts (embedded in
  the shards) of the first ``eval.sample_scenes`` held-out scenes (under sequence parallelism
  each SP group shares the work, as ``lct-sample --sp``); rank 0 writes its contact
  sheet to ``<run_dir>/eval/step-N.png`` and to TensorBoard, with its ``lct-eval`` scores.
  Settings (``sampling_settings``): ``eval.*``, else the model preset's (``model.sampling``),
  else guidance 3 / shift 3; a guidance-embedded model gets the preset's embedded guidance,
  else the value it trains with (``loss.guidance``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image

from lct_train.core.errors import ConfigError
from lct_train.data.augment import Scene, text_cut_message, window_cut
from lct_train.data.codecs import build_codec
from lct_train.data.loader import list_shards
from lct_train.data.packing import collate
from lct_train.data.schema import DatasetInfo, decode_scene, load_empty_prompt
from lct_train.data.seeding import stable_seed
from lct_train.data.tario import MemberReader, index_shard
from lct_train.eval.report import score_scene
from lct_train.eval.scenes import EvalInputError, read_truth
from lct_train.model.geometry import scene_spec
from lct_train.sample.inputs import PromptEmbedding
from lct_train.sample.modes import JOINT, PlannedShot, generate_scene
from lct_train.sample.sampler import Sampler, SamplingSettings
from lct_train.sample.writers import to_uint8_frames, write_contact_sheet
from lct_train.train.loss import noise_at
from lct_train.train.step import noised_shot_losses

logger = logging.getLogger(__name__)

VAL_STREAM = "lct-train/validation"
SAMPLE_SEED = 0
FALLBACK_GUIDANCE = 3.0  # eval.guidance / eval.shift when neither they nor the preset set one
FALLBACK_SHIFT = 3.0


def _first(*values):
    return next((v for v in values if v is not None), None)


def load_heldout(root: str, limit: int, patch, dummy_grid, window: int = 0) -> list[Scene]:
    """The first ``limit`` scenes (by key) of a dataset directory, un-augmented (prompts cut to
    the model's text ``window`` only: `augment.window_cut`, each cut scene one warning)."""
    info = DatasetInfo.read(root)
    reader, records = MemberReader(), []
    try:
        for shard in list_shards(root):
            for ref in index_shard(shard):
                if ref.error:
                    raise ConfigError("eval.data", f"{shard}: {ref.error}")
                records.append(decode_scene(reader.read(ref), ref.shard, ref.key, info))
    finally:
        reader.close()
    if not records:
        raise ConfigError("eval.data", f"{root} holds no scenes")
    records = sorted(records, key=lambda r: r.key)[:limit]
    scenes = []
    for r in records:
        text, cut = window_cut(list(r.text), window)
        if cut:
            logger.warning("eval.data: %s", text_cut_message(r.key, text, cut, window))
        scenes.append(Scene(r.key, "validation", r.latents, text, r.pooled,
                            scene_spec([t.shape[0] for t in text], [z.shape for z in r.latents],
                                       patch, dummy_grid)))
    return scenes


class Validator:
    def __init__(self, cfg, model_cfg, step_inputs, world, run_dir: Path):
        self.cfg, self.model_cfg, self.inp, self.world = cfg, model_cfg, step_inputs, world
        self.out_dir = Path(run_dir) / "eval"
        try:
            self.scenes = load_heldout(cfg.data, cfg.scenes, model_cfg.patch_size,
                                       model_cfg.dummy_grid, model_cfg.window_text_len)
            info = DatasetInfo.read(cfg.data)
        except (FileNotFoundError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError("eval.data", str(exc)) from None
        self.codec = build_codec(info.vae)
        tokens, pooled = load_empty_prompt(cfg.data)
        self.empty = PromptEmbedding(tokens.float(), pooled.float())
        self.truths = {}
        if cfg.truth:
            try:
                self.truths = {s.key: read_truth(cfg.truth, s.key)
                               for s in self.scenes[:cfg.sample_scenes]}
            except EvalInputError as exc:
                raise ConfigError("eval.truth", str(exc)) from None

    # ------------------------------------------------------------------------- loss
    @torch.no_grad()
    def loss(self, model) -> float:
        inp, dev = self.inp, self.inp.device
        n, dp, rank = len(self.scenes), inp.dp_size, inp.dp_rank
        sums = torch.zeros(2, device=dev, dtype=torch.float64)
        for i in range(math.ceil(n / dp)):
            index = rank + i * dp
            weight = 1.0 if index < n else 0.0
            scene = self.scenes[index if index < n else 0]
            mb = collate([scene], self.model_cfg.patch_size, scene.tokens)
            meta = inp.model_cfg.build_meta(mb.specs, mask=inp.mask, device=dev)
            video = mb.video.to(dev).float()
            gen = torch.Generator(device=dev)
            gen.manual_seed(stable_seed(VAL_STREAM, self.cfg.seed, scene.key))
            eps = torch.randn(video.shape, generator=gen, device=dev, dtype=torch.float32)
            ts = self.cfg.timesteps
            t_shot = torch.tensor([ts[k % len(ts)] for k in range(meta.num_shots)], device=dev)
            noised = noise_at(video, meta, t_shot, eps)
            # SP: this rank's part of each shot (the noise is the same on every rank of a group)
            losses = noised_shot_losses(model, mb, meta, noised, inp)
            shots = torch.tensor(meta.num_shots * inp.owns_batch, device=dev)
            sums += torch.stack([losses.sum().double(), shots.double()]) * weight
        dist.all_reduce(sums)
        return float(sums[0] / sums[1])

    # ------------------------------------------------------------------------- sample
    def _plan(self, scene: Scene) -> tuple[PromptEmbedding, list[PlannedShot]]:
        prompts = [PromptEmbedding(t, scene.pooled[g]) for g, t in enumerate(scene.text)]
        shots = [PlannedShot(text=f"held-out {scene.key} shot {i}", prompt=prompts[i + 1],
                             seed=SAMPLE_SEED + i, latent_shape=tuple(z.shape))
                 for i, z in enumerate(scene.latents)]
        return prompts[0], shots

    def sampling_settings(self) -> SamplingSettings:
        """The sample's settings (module docstring)."""
        cfg, preset = self.cfg, self.model_cfg.sampling
        return SamplingSettings(
            steps=cfg.sample_steps,
            guidance=_first(cfg.guidance, preset.guidance, FALLBACK_GUIDANCE),
            shift=_first(cfg.shift, preset.shift, FALLBACK_SHIFT),
            embedded_guidance=_first(preset.embedded_guidance, self.inp.guidance))

    def sample(self, model, step: int) -> tuple[dict, Path | None]:
        """Scores (means over the sampled scenes) and the contact sheet (rank 0)."""
        cfg = self.cfg
        settings = self.sampling_settings()
        sampler = Sampler(model, self.model_cfg, self.empty, mask=self.inp.mask,
                          window=max(len(s.latents) for s in self.scenes), settings=settings,
                          sp=self.inp.sp, dtype=self.inp.compute_dtype)
        scores, frames, captions = [], [], []
        for scene in self.scenes[:cfg.sample_scenes]:
            global_prompt, shots = self._plan(scene)
            with torch.no_grad():
                results = generate_scene(sampler, global_prompt, shots, JOINT)
            videos = [to_uint8_frames(self.codec.decode(r.latent.float())) for r in results]
            scores.append(score_scene([torch.from_numpy(v) for v in videos],
                                      self.truths.get(scene.key)))
            frames += videos
            captions += [f"step {step} {scene.key} shot {i}" for i in range(len(videos))]
        means = {}
        for key in ("hidden_agreement", "character_agreement", "room_agreement",
                    "palette_similarity", "ssim"):
            values = [s[key] for s in scores if s.get(key) is not None]
            if values:
                means[key] = sum(values) / len(values)
        sheet = None
        if self.world.is_main and frames:
            sheet = self.out_dir / f"step-{step:08d}.png"
            write_contact_sheet(sheet, frames, captions)
        return means, sheet

    def run(self, model, step: int) -> tuple[dict, np.ndarray | None]:
        """``({"val/loss": ..., "val/<score>": ...}, contact sheet HWC uint8 or None)``."""
        scalars = {"val/loss": self.loss(model)}
        image = None
        if self.cfg.sample_scenes:
            means, sheet = self.sample(model, step)
            scalars |= {f"val/{k}": v for k, v in means.items()}
            if sheet is not None:
                with Image.open(sheet) as im:
                    image = np.asarray(im.convert("RGB"))
        model.train()
        return scalars, image
