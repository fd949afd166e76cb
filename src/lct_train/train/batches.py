"""Where a rank's micro-batches come from: the scene loader, or synthetic in-memory scenes.

Both give ``next_step(step) -> list[PackedScenes]`` (``grad_accum`` micro-batches) and a
``state_dict()`` / ``load_state_dict()`` pair. The synthetic source is a pure function of
``(seed, step, global micro-batch index)`` (global index = ``dp_rank * grad_accum + micro``), so
a global batch is the same whatever the number of ranks: it backs the FSDP-equivalence tests
and the benchmarks. It has no state to save.
"""

from __future__ import annotations

import random

import torch

from lct_train.core.errors import ConfigError
from lct_train.data.config import DataConfig
from lct_train.data.encoder_family import check_encoder_family, kind_of
from lct_train.data.packing import PackedScenes
from lct_train.data.schema import GEOMETRY_KEYS  # dataset.json vs the model config
from lct_train.data.seeding import stable_seed
from lct_train.model.layout import GroupSpec, SceneSpec

SYNTHETIC_STREAM = "lct-train/synthetic"


def global_micro_index(dp_rank: int, grad_accum: int, micro: int) -> int:
    return dp_rank * grad_accum + micro


class LoaderBatches:
    """``grad_accum`` consecutive batches of this rank's ``SceneLoader`` per step."""

    stateful = True

    def __init__(self, data_cfg: DataConfig, model_cfg, dp_rank: int, dp_size: int,
                 grad_accum: int):
        from lct_train.data.loader import SceneLoader

        # a bad source raises loader.SourceError, a ConfigError naming data.sources[i].path
        self.loader = SceneLoader(data_cfg, dp_rank=dp_rank, dp_world_size=dp_size)
        for i, (source, each) in enumerate(zip(data_cfg.sources, self.loader.infos)):
            try:  # the widths agree across families (HunyuanVideo's and Wan2.1's): ask the kinds
                check_encoder_family(model_cfg, kind_of(each.text_encoder), kind_of(each.vae),
                                     source=str(source.path), model_name="the model")
            except ValueError as exc:
                raise ConfigError(f"data.sources[{i}].path", str(exc)) from None
        info = self.loader.infos[0]
        for key in GEOMETRY_KEYS:
            if key == "pooled_dim" and not model_cfg.takes_pooled:
                continue  # the model reads no pooled rows: any width will do
            if getattr(info, key) != getattr(model_cfg, key):
                raise ConfigError(f"model.{key}", f"is {getattr(model_cfg, key)} but the data "
                                  f"({data_cfg.sources[0].path}) has {getattr(info, key)}")
        self.grad_accum = grad_accum
        self._it = None

    def next_step(self, step: int) -> list[PackedScenes]:
        if self._it is None:
            self._it = iter(self.loader)
        return [next(self._it) for _ in range(self.grad_accum)]

    def state_dict(self) -> dict:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.loader.load_state_dict(state)
        self._it = None


class SyntheticBatches:
    """Random scenes drawn from ``(seed, step, global micro index)``; stateless."""

    stateful = False

    def __init__(self, model_cfg, syn_cfg, seed: int, dp_rank: int, grad_accum: int):
        self.model_cfg, self.cfg, self.seed = model_cfg, syn_cfg, seed
        self.dp_rank, self.grad_accum = dp_rank, grad_accum

    def next_step(self, step: int) -> list[PackedScenes]:
        return [self.micro_batch(step, global_micro_index(self.dp_rank, self.grad_accum, m))
                for m in range(self.grad_accum)]

    def _spec(self, rng: random.Random) -> SceneSpec:
        cfg, window = self.cfg, self.model_cfg.window_text_len
        groups, global_text = [], 0
        if cfg.with_global:
            global_text = rng.randint(1, cfg.max_text_len)
            if window:  # leave a shot at least one token of its window
                global_text = min(global_text, window - 1)
            groups.append(GroupSpec(global_text, self.model_cfg.dummy_grid, is_global=True))
        for _ in range(rng.randint(1, cfg.max_shots)):
            grid = tuple(rng.randint(1, g) for g in cfg.max_grid)
            text = rng.randint(1, cfg.max_text_len)
            groups.append(GroupSpec(min(text, window - global_text) if window else text, grid))
        return SceneSpec(tuple(groups))

    def micro_batch(self, step: int, global_micro: int) -> PackedScenes:
        seed = stable_seed(SYNTHETIC_STREAM, self.seed, step, global_micro)
        rng = random.Random(seed)
        gen = torch.Generator().manual_seed(seed)
        specs = [self._spec(rng) for _ in range(self.cfg.scenes_per_batch)]
        keys = [f"synthetic/{step}/{global_micro}/{i}" for i in range(len(specs))]
        return random_scenes(specs, keys, self.model_cfg, gen)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        del state


def random_scenes(specs: list[SceneSpec], keys: list[str], model_cfg,
                  gen: torch.Generator) -> PackedScenes:
    """A packed micro-batch of ``specs`` with random latents, text and pooled rows (of the
    model's ``pooled_dim``: none for Wan) from ``gen`` (dummy tokens of global groups zero, as
    the loader gives them; a Wan global group has none)."""
    video, text = [], []
    for spec in specs:
        for g in spec.groups:
            rows = torch.randn(g.video_len, model_cfg.patch_dim, generator=gen)
            video.append(rows.zero_() if g.is_global else rows)
            text.append(torch.randn(g.text_len, model_cfg.text_dim, generator=gen))
    num_groups = sum(len(s.groups) for s in specs)
    num_shots = sum(s.num_shots for s in specs)
    tokens = sum(s.num_tokens for s in specs)
    return PackedScenes(
        keys=keys,
        sources=["synthetic"] * len(specs),
        specs=specs,
        video=torch.cat(video),
        text=torch.cat(text),
        pooled=torch.randn(num_groups, model_cfg.pooled_dim, generator=gen),
        shot_is_image=torch.zeros(num_shots, dtype=torch.bool),
        stats={"scenes": float(len(specs)), "tokens": float(tokens), "packing_efficiency": 1.0},
    )
