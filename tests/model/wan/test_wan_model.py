"""WanModel: packing order (SPEC §8.4), context-causal independence of later shots' video and
prompts (§8.5), KV cache = recompute for both guidance branches (§8.6), parameter counts
(§8.1), input errors."""

import warnings

import pytest
import torch

from lct_train.convert.wan_config import config_to_diffusers
from lct_train.model.layout import SceneSpec
from lct_train.model.wan import WanConfig, WanModel, wan_scene
from tests.model.wan.wan_testutils import (
    WAN_PRESET_PARAMS,
    meta_for,
    random_wan_inputs,
    run,
    tiny_wan_model,
)
from tests.testutils import PRESETS

BATCH = [
    wan_scene([(2, (1, 2, 2)), (3, (2, 1, 2))], global_text=4),
    wan_scene([(4, (1, 2, 3))]),
    wan_scene([(1, (1, 1, 2)), (2, (1, 2, 2)), (3, (1, 1, 1))], global_text=2),
]
TIGHT = dict(rtol=1e-5, atol=1e-5)  # fp32: other shapes, other summation orders


@pytest.fixture(scope="module")
def model():
    return tiny_wan_model()


def _scene_rows(meta, s):
    scene_of_group = torch.tensor([i for i, spec in enumerate(meta.specs) for _ in spec.groups])
    return scene_of_group[meta.video_group] == s


@pytest.mark.parametrize("mask", ["bidirectional", "causal"])
def test_packing_order_does_not_change_scene_outputs(model, mask):
    cfg, outputs = model.cfg, {}
    for order in ([0, 1, 2], [2, 0, 1]):
        meta = meta_for(cfg, [BATCH[i] for i in order], mask=mask)
        parts = [random_wan_inputs(cfg, meta_for(cfg, [BATCH[i]]), seed=i) for i in order]
        video, text, t = (torch.cat(p) for p in zip(*parts))
        with torch.no_grad():
            out = run(model, meta, video, text, t)
        outputs[tuple(order)] = {i: out[_scene_rows(meta, pos)] for pos, i in enumerate(order)}
    for s in range(3):
        torch.testing.assert_close(outputs[(0, 1, 2)][s], outputs[(2, 0, 1)][s], **TIGHT)


def test_causal_shot_ignores_later_shots_video_and_prompt(model):
    cfg, spec = model.cfg, BATCH[2]
    meta = meta_for(cfg, [spec], mask="causal")
    video, text, t = random_wan_inputs(cfg, meta)
    last = meta.video_group == meta.num_groups - 1
    last_text = torch.arange(meta.num_text) >= meta.num_text - spec.groups[-1].text_len
    with torch.no_grad():
        out = run(model, meta, video, text, t)
        changed = run(model, meta, video + last[:, None], text + last_text[:, None],
                      torch.cat([t[:-1], torch.tensor([0.9])]))
        prompt_only = run(model, meta, video, text + 3.0 * last_text[:, None], t)
        short = meta_for(cfg, [SceneSpec(spec.groups[:-1])], mask="causal")
        removed = run(model, short, video[~last], text[~last_text], t[:-1])
        bidir_meta = meta_for(cfg, [spec])
        bidir = [run(model, bidir_meta, video, x, t) for x in (text, text + 3.0 * last_text[:, None])]
    torch.testing.assert_close(changed[~last], out[~last], **TIGHT)
    torch.testing.assert_close(prompt_only[~last], out[~last], **TIGHT)
    torch.testing.assert_close(removed, out[~last], **TIGHT)
    assert (changed[last] - out[last]).abs().max() > 1e-3  # the changed shot did change
    assert (prompt_only[last] - out[last]).abs().max() > 1e-3  # its own prompt reaches it
    # bidirectionally, the later prompt reaches earlier shots (through their video attention)
    assert (bidir[0][~last] - bidir[1][~last]).abs().max() > 1e-4


def test_kv_cache_equals_recompute_for_two_guidance_branches(model):
    """Shot by shot with one cache per branch (conditional / unconditional prompts), the
    global prompt cached first and never passed again: each shot's output equals the full
    context-causal forward of its branch."""
    cfg, spec = model.cfg, BATCH[0]
    full = meta_for(cfg, [spec], mask="causal")
    video, cond_text, t = random_wan_inputs(cfg, full)
    uncond_text = torch.randn_like(cond_text)
    starts = torch.tensor([0, *(g.text_len for g in spec.groups)]).cumsum(0)
    with torch.no_grad():
        expected = {b: run(model, full, video, x, t) for b, x in (("c", cond_text),
                                                                    ("u", uncond_text))}
        caches = {b: model.new_kv_cache() for b in expected}
        for g, group in enumerate(spec.groups):
            for branch, text in (("c", cond_text), ("u", uncond_text)):
                cache = caches[branch]
                new = meta_for(cfg, [SceneSpec((group,))], mask="causal", cached=cache.spec)
                rows = full.video_group == g
                own_text = text[starts[g]:starts[g + 1]]
                cache.write = False  # a denoising step that is not kept
                run(model, new, video[rows] + 1.0, own_text, t[g:g + 1] * 0.5, kv_cache=cache)
                cache.write = True
                out = run(model, new, video[rows], own_text, t[g:g + 1], kv_cache=cache)
                cache.commit()
                torch.testing.assert_close(out, expected[branch][rows], **TIGHT)
    assert caches["c"].num_text == full.num_text
    assert caches["c"].num_tokens == full.num_video
    assert (expected["c"] - expected["u"]).abs().max() > 1e-3  # the branches do differ


@pytest.mark.parametrize("preset", sorted(WAN_PRESET_PARAMS))
def test_preset_has_the_source_models_parameters(preset):
    """SPEC §8.1: the same names and sizes as diffusers' model (the patch embedding's Conv3d
    kernel as a Linear weight), nothing added for LCT."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from diffusers import WanTransformer3DModel
    cfg = WanConfig.from_yaml(PRESETS / f"{preset}.yaml")
    with torch.device("meta"):
        ours, source = WanModel(cfg), WanTransformer3DModel(**config_to_diffusers(cfg))
    sizes = {n: p.numel() for n, p in ours.named_parameters()}
    assert sizes == {n: p.numel() for n, p in source.named_parameters()}
    assert sum(sizes.values()) == WAN_PRESET_PARAMS[preset]
    assert ours.state_dict().keys() == source.state_dict().keys()


def test_input_errors(model):
    cfg = model.cfg
    meta = meta_for(cfg, [BATCH[1]])
    video, text, t = random_wan_inputs(cfg, meta)
    with pytest.raises(ValueError, match="no pooled text"):
        model(video, text, torch.zeros(1, 4), t, meta)
    with pytest.raises(ValueError, match=r"text must have shape \(4, 16\)"):
        run(model, meta, video, text[:3], t)
    with pytest.raises(ValueError, match="a KV cache needs a context-causal batch"):
        run(model, meta, video, text, t, kv_cache=model.new_kv_cache())
    other = meta_for(cfg.__class__(**{**cfg.to_dict(), "text_len": 30}), [BATCH[1]])
    with pytest.raises(ValueError, match="text_len=30"):
        run(model, other, video, text, t)
    with pytest.raises(ValueError, match=r"\(rope_offsets, shot_gap\)=\('temporal', 8\)"):
        run(model, meta_for(cfg, [BATCH[1]], shot_gap=8), video, text, t)
