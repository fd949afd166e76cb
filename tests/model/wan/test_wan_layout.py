"""`build_wan_meta`: RoPE coordinates (SPEC §9), windows, masks over video rows, bad specs."""

import pytest
import torch

from lct_train.model.layout import GroupSpec, SceneSpec
from lct_train.model.wan import build_wan_meta, wan_scene

TEXT_LEN = 8


def _meta(specs, **kwargs):
    return build_wan_meta(specs, text_len=TEXT_LEN, **kwargs)


def test_temporal_offsets_by_hand():
    """Shot 1 (F=2) starts at 0, shot 2 at 0 + 2 + gap; the global group takes no positions."""
    meta = _meta([wan_scene([(2, (2, 1, 2)), (1, (1, 2, 1))], global_text=3)], shot_gap=4)
    expected = [[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 0, 1], [6, 0, 0], [6, 1, 0]]
    assert meta.rope_coords.tolist() == expected
    assert meta.video_group.tolist() == [1, 1, 1, 1, 2, 2]
    assert meta.video_shot.tolist() == [0, 0, 0, 0, 1, 1]
    assert meta.shot_group.tolist() == [1, 2]


def test_diagonal_offsets_by_hand():
    meta = _meta([wan_scene([(2, (2, 1, 3)), (1, (1, 1, 1))])], rope_offsets="diagonal")
    assert meta.rope_coords[-1].tolist() == [3, 3, 3]  # shot 2 starts at max(2, 1, 3)
    assert meta.rope_coords[:3].tolist() == [[0, 0, 0], [0, 0, 1], [0, 0, 2]]


def test_windows_are_global_then_own_then_padding():
    specs = [wan_scene([(2, (1, 1, 1)), (1, (1, 1, 1))], global_text=3),
             wan_scene([(4, (1, 1, 2))])]
    meta = _meta(specs)
    pad = meta.num_text  # the zero row after the 10 text rows
    assert meta.num_text == 10
    assert meta.window_index.view(3, TEXT_LEN).tolist() == [
        [0, 1, 2, 3, 4] + [pad] * 3,  # global (rows 0-2) + shot 1 (rows 3-4)
        [0, 1, 2, 5] + [pad] * 4,  # global + shot 2 (row 5)
        [6, 7, 8, 9] + [pad] * 4,  # the second scene has no global prompt
    ]
    # cross-attention: each shot's video rows see exactly its window
    assert meta.cross_attn.runs == ((0, 1, 0, 8), (1, 2, 8, 16), (2, 4, 16, 24))


@pytest.mark.parametrize("mask", ["bidirectional", "causal", "isolated"])
def test_self_attention_mask_over_video_rows(mask):
    specs = [wan_scene([(2, (1, 1, 2)), (1, (1, 1, 1))], global_text=3), wan_scene([(4, (1, 1, 2))])]
    meta = _meta(specs, mask=mask)
    group, scene = meta.video_group, torch.tensor([0, 0, 0, 1, 1])
    allowed = scene[:, None] == scene[None, :]
    if mask == "causal":
        allowed &= group[None, :] <= group[:, None]
    if mask == "isolated":
        allowed &= group[None, :] == group[:, None]
    keys = torch.arange(meta.num_video)
    got = (keys >= meta.attn.lo[:, None]) & (keys < meta.attn.hi[:, None])
    assert meta.attn.lo2 is None  # one key interval per row (no global video on Wan)
    assert torch.equal(got, allowed)


def test_cached_scene_continues_positions_and_reads_the_cached_global_prompt():
    full = wan_scene([(2, (2, 1, 1)), (1, (1, 1, 1))], global_text=3)
    meta = _meta([SceneSpec(full.groups[2:])], mask="causal", cached=SceneSpec(full.groups[:2]))
    assert (meta.cached_video, meta.cached_text, meta.cached_groups) == (2, 5, 2)
    assert meta.rope_coords.tolist() == [[6, 0, 0]]  # after shot 1: 0 + 2 + 4
    assert meta.window_index.tolist() == [0, 1, 2, 5] + [6] * 4  # cached global, own, pad row
    assert (meta.attn.lo.tolist(), meta.attn.hi.tolist()) == ([0], [3])


def test_too_long_window_names_the_scene():
    with pytest.raises(ValueError, match=r"scene 1 group 2: .* 9 text tokens \(global 5 \+ own "
                                         r"4\), more than the model's text_len 8"):
        _meta([wan_scene([(1, (1, 1, 1))]), wan_scene([(1, (1, 1, 1)), (4, (1, 1, 1))],
                                                     global_text=5)])


def test_bad_specs():
    with pytest.raises(ValueError, match="Wan global group has no video"):
        _meta([SceneSpec((GroupSpec(2, (1, 2, 2), is_global=True),))])
    with pytest.raises(ValueError, match="grid must be 3 positive ints"):
        _meta([wan_scene([(1, (0, 1, 1))])])
    with pytest.raises(ValueError, match="needs mask='causal'"):
        _meta([wan_scene([(1, (1, 1, 1))])], cached=wan_scene([], global_text=2))
