"""Packed-batch metadata: RoPE coordinates (SPEC §3), mask intervals (SPEC §4), stream maps."""

import itertools

import pytest
import torch

from lct_train.model.layout import GroupSpec, SceneSpec, build_packed_meta
from tests.model.model_testutils import group_is_global, group_scene, joint_is_text

# Hand-worked example: global group (2 text, dummy grid 1x1x2), shot 1 (3 text, grid 2x2x3),
# shot 2 (1 text, grid 1x2x2).
TWO_SHOT = SceneSpec(
    (GroupSpec(2, (1, 1, 2), is_global=True), GroupSpec(3, (2, 2, 3)), GroupSpec(1, (1, 2, 2)))
)


def _rows(*triples):
    return torch.tensor(triples, dtype=torch.long)


def test_rope_coords_two_shot_example_literal():
    meta = build_packed_meta([TWO_SHOT])
    expected = _rows(
        # global: text p=0,1; video s=2 -> (2,2,2),(2,2,3); next p = 2 + max(1,1,2) = 4
        (0, 0, 0), (1, 1, 1), (2, 2, 2), (2, 2, 3),
        # shot 1: text 4,5,6; video s=7, (f, y, x) row-major; next p = 7 + 3 = 10
        (4, 4, 4), (5, 5, 5), (6, 6, 6),
        (7, 7, 7), (7, 7, 8), (7, 7, 9), (7, 8, 7), (7, 8, 8), (7, 8, 9),
        (8, 7, 7), (8, 7, 8), (8, 7, 9), (8, 8, 7), (8, 8, 8), (8, 8, 9),
        # shot 2: text 10; video s=11
        (10, 10, 10), (11, 11, 11), (11, 11, 12), (11, 12, 11), (11, 12, 12),
    )  # fmt: skip
    torch.testing.assert_close(meta.rope_coords, expected)
    assert meta.rope_rotate.all()


def test_rope_coords_without_text_rope_text_occupies_no_positions():
    meta = build_packed_meta([TWO_SHOT], text_rope=False)
    is_text = joint_is_text(meta)
    video = meta.rope_coords[~is_text]
    expected = _rows(
        (0, 0, 0), (0, 0, 1),  # dummy, next p = 2
        (2, 2, 2), (2, 2, 3), (2, 2, 4), (2, 3, 2), (2, 3, 3), (2, 3, 4),
        (3, 2, 2), (3, 2, 3), (3, 2, 4), (3, 3, 2), (3, 3, 3), (3, 3, 4),  # next p = 5
        (5, 5, 5), (5, 5, 6), (5, 6, 5), (5, 6, 6),
    )  # fmt: skip
    torch.testing.assert_close(video, expected)
    assert not meta.rope_rotate[is_text].any()
    assert meta.rope_rotate[~is_text].all()


def test_one_shot_scene_without_text_rope_is_the_plain_video_grid():
    meta = build_packed_meta([SceneSpec((GroupSpec(5, (2, 3, 4)),))], text_rope=False)
    grid = torch.stack(torch.meshgrid(*map(torch.arange, (2, 3, 4)), indexing="ij"), -1)
    torch.testing.assert_close(meta.rope_coords[~joint_is_text(meta)], grid.reshape(-1, 3))


def _dense_mask_from_definition(meta):
    """SPEC §4 literally: same scene, and (bidirectional or group(b) <= group(a))."""
    scene = group_scene(meta)[meta.joint_group]
    same_scene = scene[:, None] == scene[None, :]
    if meta.mask == "bidirectional":
        return same_scene
    if meta.mask == "isolated":  # own group, or the scene's global group (shots only)
        key_global = group_is_global(meta)[meta.joint_group][None, :]
        same_group = meta.joint_group[:, None] == meta.joint_group[None, :]
        return same_scene & (same_group | key_global)
    return same_scene & (meta.joint_group[None, :] <= meta.joint_group[:, None])


def _dense_mask_from_intervals(attn):
    keys = torch.arange(attn.num_k)
    mask = (keys[None, :] >= attn.lo[:, None]) & (keys[None, :] < attn.hi[:, None])
    if attn.lo2 is not None:
        mask |= (keys[None, :] >= attn.lo2[:, None]) & (keys[None, :] < attn.hi2[:, None])
    return mask


BATCH = [
    TWO_SHOT,
    SceneSpec((GroupSpec(4, (1, 2, 2)),)),
    SceneSpec((GroupSpec(1, (1, 1, 1), True), GroupSpec(0, (2, 1, 2)), GroupSpec(2, (1, 1, 3)))),
]


@pytest.mark.parametrize("mask", ["bidirectional", "causal", "isolated"])
def test_intervals_equal_the_spec_mask(mask):
    meta = build_packed_meta(BATCH, mask=mask)
    assert torch.equal(_dense_mask_from_intervals(meta.attn), _dense_mask_from_definition(meta))
    sizes = [s.num_tokens for s in BATCH]
    bounds = [0, *torch.tensor(sizes).cumsum(0).tolist()]
    scene_bounds = list(itertools.pairwise(bounds))
    assert [s[:2] for s in meta.attn.scenes] == scene_bounds  # queries
    assert [s[2:] for s in meta.attn.scenes] == scene_bounds  # keys (no cache)
    assert meta.attn.lo.dtype == torch.int32
    # runs cover every query row exactly once and carry its interval (isolated: shot rows of
    # scenes with a global group once more, with the second interval = the global group)
    covered = torch.zeros(meta.num_joint, dtype=torch.long)
    first = len(meta.attn.runs) if mask != "isolated" else sum(len(s.groups) for s in BATCH)
    for i, (q0, q1, lo, hi) in enumerate(meta.attn.runs):
        covered[q0:q1] += 1
        bounds = (meta.attn.lo, meta.attn.hi) if i < first else (meta.attn.lo2, meta.attn.hi2)
        assert (bounds[0][q0:q1] == lo).all()
        assert (bounds[1][q0:q1] == hi).all()
    shot_rows_with_global = sum(s.num_tokens - s.groups[0].text_len - s.groups[0].video_len
                                for s in BATCH if s.groups[0].is_global)
    assert int(covered.sum()) == meta.num_joint + (shot_rows_with_global if mask == "isolated" else 0)
    assert (covered >= 1).all()
    assert (meta.attn.lo2 is not None) == (mask == "isolated")


def test_text_intervals_are_per_group_text():
    meta = build_packed_meta(BATCH)
    mask = _dense_mask_from_intervals(meta.text_attn)
    assert torch.equal(mask, meta.text_group[:, None] == meta.text_group[None, :])


def test_stream_and_joint_indices_are_consistent():
    meta = build_packed_meta(BATCH, mask="causal")
    streams = torch.cat([torch.arange(meta.num_text), -1 - torch.arange(meta.num_video)])
    joint = streams[meta.joint_from_streams]
    assert torch.equal(joint[meta.text_to_joint], torch.arange(meta.num_text))
    assert torch.equal(joint[meta.video_to_joint], -1 - torch.arange(meta.num_video))
    assert torch.equal(meta.joint_group[meta.text_to_joint], meta.text_group)
    assert torch.equal(meta.joint_group[meta.video_to_joint], meta.video_group)
    # group order inside each scene: [T_G D_G T_1 V_1 ...]
    assert meta.group_text_len == (2, 3, 1, 4, 1, 0, 2)
    assert meta.group_text_count.tolist() == list(meta.group_text_len)
    assert meta.num_shots == 5
    assert meta.shot_group.tolist() == [1, 2, 3, 5, 6]
    assert meta.shot_video_cu.tolist() == [0, 12, 16, 20, 24, 27]
    dummy = meta.video_shot < 0
    assert dummy.sum() == 2 + 1
    assert group_is_global(meta)[meta.video_group[dummy]].all()


def test_cached_layout_continues_the_full_scene():
    full = build_packed_meta([TWO_SHOT], mask="causal")
    cached = SceneSpec(TWO_SHOT.groups[:2])
    new = SceneSpec(TWO_SHOT.groups[2:])
    meta = build_packed_meta([new], mask="causal", cached=cached)
    start = cached.num_tokens
    torch.testing.assert_close(meta.rope_coords, full.rope_coords[start:])
    assert torch.equal(meta.attn.lo, full.attn.lo[start:])
    assert torch.equal(meta.attn.hi, full.attn.hi[start:])
    assert meta.attn.num_k == full.num_joint
    assert meta.attn.num_q == new.num_tokens
    assert meta.cached_groups == 2
    assert meta.cached_tokens == start


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"specs": [SceneSpec((GroupSpec(1, (1, 1, 1)), GroupSpec(1, (1, 1, 1), True)))]},
         "group 1: the global group must be"),
        ({"specs": [TWO_SHOT], "mask": "full"}, "mask must be one of"),
        ({"specs": [TWO_SHOT], "cached": TWO_SHOT}, "needs mask='causal'"),
        ({"specs": [SceneSpec((GroupSpec(1, (1, 0, 1)),))]}, "scene 0 group 0: grid"),
        ({"specs": []}, "specs is empty"),
    ],
)  # fmt: skip
def test_bad_specs_name_the_culprit(kwargs, message):
    specs = kwargs.pop("specs")
    with pytest.raises(ValueError, match=message):
        build_packed_meta(specs, **kwargs)
