"""LCTModel: single-shot equivalence with diffusers (SPEC §8.2), packing order (§8.4),
context-causal independence of later groups (§8.5), KV cache, input errors."""

import warnings

import pytest
import torch

from lct_train.model.geometry import patchify, unpatchify
from lct_train.model.layout import GroupSpec, SceneSpec, build_packed_meta
from lct_train.model.mmdit import LCTModel
from tests.model.model_testutils import group_scene, random_inputs, scene
from tests.testutils import tiny_config


def _model(**overrides) -> LCTModel:
    torch.manual_seed(0)
    return LCTModel(tiny_config(**overrides)).double().eval()


def test_one_shot_scene_equals_diffusers_hunyuan_video():
    """SPEC §8.2 against the plain single-shot model it mirrors (same weights, key names)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from diffusers import HunyuanVideoTransformer3DModel
    cfg = tiny_config(text_rope=False, guidance_embeds=True, mlp_ratio=4.0, refiner_mlp_ratio=4.0)
    torch.manual_seed(0)
    source = HunyuanVideoTransformer3DModel(
        in_channels=cfg.latent_channels, out_channels=cfg.latent_channels,
        num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
        num_layers=cfg.num_dual_blocks, num_single_layers=cfg.num_single_blocks,
        num_refiner_layers=cfg.num_refiner_blocks, text_embed_dim=cfg.text_dim,
        pooled_projection_dim=cfg.pooled_dim, rope_axes_dim=cfg.rope_axes_dim,
    ).double()  # fmt: skip
    model = LCTModel(cfg).double()
    state = source.state_dict()
    state["x_embedder.proj.weight"] = state["x_embedder.proj.weight"].flatten(1)
    model.load_state_dict(state, strict=True)  # the same parameter names, nothing else

    channels, frames, height, width, text_len = cfg.latent_channels, 2, 4, 6, 5
    latent = torch.randn(1, channels, frames, height, width, dtype=torch.float64)
    text = torch.randn(1, text_len, cfg.text_dim, dtype=torch.float64)
    pooled = torch.randn(1, cfg.pooled_dim, dtype=torch.float64)
    t, guidance = torch.tensor([0.37], dtype=torch.float64), 6.0
    grid = (frames, height // 2, width // 2)
    meta = build_packed_meta([SceneSpec((GroupSpec(text_len, grid),))], text_rope=False)
    with torch.no_grad():
        expected = source(
            latent, t * cfg.timestep_scale, text, torch.ones(1, text_len, dtype=torch.long), pooled,
            guidance=torch.tensor([guidance * cfg.timestep_scale], dtype=torch.float64),
            return_dict=False,
        )[0][0]  # fmt: skip
        out = model(
            patchify(latent[0], cfg.patch_size), text[0], pooled, t, meta, guidance=guidance
        )
    got = unpatchify(out, grid, cfg.patch_size, channels)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)  # fp32 RoPE/timestep tables


BATCH = [
    scene((2, (1, 2, 2)), (3, (2, 1, 2))),
    scene((4, (1, 2, 3)), text_global=None),
    scene((1, (1, 1, 2)), (2, (1, 2, 2)), (3, (1, 1, 1))),
]


def _scene_outputs(out, meta):
    """Split the video-stream output per scene."""
    scene_of_token = group_scene(meta)[meta.video_group]
    return [out[scene_of_token == s] for s in range(len(meta.specs))]


@pytest.mark.parametrize("mask", ["bidirectional", "causal"])
def test_packing_order_does_not_change_scene_outputs(mask):
    """SPEC §8.4."""
    model = _model()
    outputs = {}
    for order in ([0, 1, 2], [2, 0, 1]):
        specs = [BATCH[i] for i in order]
        meta = build_packed_meta(specs, mask=mask)
        per_scene_inputs = [
            random_inputs(model.cfg, build_packed_meta([BATCH[i]]), seed=i) for i in order
        ]
        video, text, pooled, t = (torch.cat(parts) for parts in zip(*per_scene_inputs))
        with torch.no_grad():
            out = model(video, text, pooled, t, meta)
        outputs[tuple(order)] = dict(zip(order, _scene_outputs(out, meta)))
    for s in range(3):
        torch.testing.assert_close(
            outputs[(0, 1, 2)][s], outputs[(2, 0, 1)][s], rtol=1e-10, atol=1e-12
        )


def test_causal_group_output_ignores_later_groups():
    """SPEC §8.5: change or remove the last shot; earlier groups' outputs stay."""
    model = _model()
    full_spec = scene((2, (1, 2, 2)), (3, (2, 1, 2)), (1, (1, 2, 1)))
    meta = build_packed_meta([full_spec], mask="causal")
    video, text, pooled, t = random_inputs(model.cfg, meta)
    last = meta.video_group == meta.num_groups - 1
    with torch.no_grad():
        out = model(video, text, pooled, t, meta)
        changed_video = video.clone()
        changed_video[last] += 1.0
        changed_t = t.clone()
        changed_t[-1] = 0.9
        changed = model(
            changed_video,
            text + (meta.text_group == meta.num_groups - 1)[:, None],
            pooled,
            changed_t,
            meta,
        )
        short_spec = SceneSpec(full_spec.groups[:-1])
        short = build_packed_meta([short_spec], mask="causal")
        removed = model(video[~last], text[: short.num_text], pooled[:-1], t[:-1], short)
    torch.testing.assert_close(changed[~last], out[~last], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(removed, out[~last], rtol=1e-10, atol=1e-12)
    assert (changed[last] - out[last]).abs().max() > 1e-3  # the changed group did change
    # and bidirectional attention does see later groups
    bidir = build_packed_meta([full_spec])
    with torch.no_grad():
        a = model(video, text, pooled, t, bidir)
        b = model(changed_video, text, pooled, t, bidir)
    assert (a[~last] - b[~last]).abs().max() > 1e-6


def test_kv_cache_shot_by_shot_equals_full_causal_forward():
    model = _model()
    spec = scene((2, (1, 2, 2)), (3, (2, 1, 2)), (1, (1, 2, 1)))
    full = build_packed_meta([spec], mask="causal")
    video, text, pooled, t = random_inputs(model.cfg, full)
    with torch.no_grad():
        expected = model(video, text, pooled, t, full)
        cache, outs = model.new_kv_cache(), []
        for g in range(full.num_groups):
            new = build_packed_meta(
                [SceneSpec(spec.groups[g : g + 1])], mask="causal", cached=cache.spec
            )
            vg, tg = full.video_group == g, full.text_group == g
            # a step that is not written, then the same inputs written to the cache
            cache.write = False
            model(
                video[vg] + 1.0,
                text[tg],
                pooled[g : g + 1],
                t[g : g + 1] * 0.5,
                new,
                kv_cache=cache,
            )
            cache.write = True
            outs.append(
                model(video[vg], text[tg], pooled[g : g + 1], t[g : g + 1], new, kv_cache=cache)
            )
            cache.commit()
    torch.testing.assert_close(torch.cat(outs), expected, rtol=1e-10, atol=1e-12)
    assert cache.spec == spec


def test_kv_cache_misuse_is_refused():
    model = _model()
    spec = scene((2, (1, 2, 2)))
    meta = build_packed_meta([spec], mask="causal")
    inputs = random_inputs(model.cfg, meta)
    cache = model.new_kv_cache()
    with pytest.raises(RuntimeError, match=r"no forward with kv_cache\.write=True"):
        cache.commit()
    with pytest.raises(ValueError, match="needs a context-causal batch"):
        model(*inputs, build_packed_meta([spec]), kv_cache=cache)
    with torch.no_grad():
        cache.write = True
        model(*inputs, meta, kv_cache=cache)
        cache.commit()
        with pytest.raises(ValueError, match=r"build meta with cached=cache\.spec"):
            model(*inputs, meta, kv_cache=cache)


@pytest.mark.parametrize(
    ("culprit", "message"),
    [("video", "video must have shape"), ("pooled", "pooled must have shape"),
     ("timesteps", "timesteps must have shape"), ("dummy", "dummy tokens")],
)  # fmt: skip
def test_bad_inputs_name_the_culprit(culprit, message):
    model = _model()
    spec = scene((2, (1, 2, 2)), dummy=(1, 1, 1) if culprit == "dummy" else (1, 2, 2))
    meta = build_packed_meta([spec])
    video, text, pooled, t = random_inputs(model.cfg, meta)
    if culprit == "video":
        video = video[1:]
    if culprit == "pooled":
        pooled = pooled[:, :-1]
    if culprit == "timesteps":
        t = t[:1]
    with pytest.raises(ValueError, match=message):
        model(video, text, pooled, t, meta)


def test_dummy_tokens_are_zeroed_and_gradients_flow_to_every_parameter():
    model = _model()
    meta = build_packed_meta(BATCH, mask="causal")
    video, text, pooled, t = random_inputs(model.cfg, meta)
    noisy_dummy = video.clone()
    noisy_dummy[meta.video_shot < 0] = 5.0
    out = model(video, text, pooled, t, meta)
    torch.testing.assert_close(model(noisy_dummy, text, pooled, t, meta), out)
    out[meta.video_shot >= 0].square().mean().backward()
    no_grad = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert no_grad == []
