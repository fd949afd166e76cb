"""The objective (SPEC §5): per-shot loss, dummy tokens excluded, global-mean normalisation,
per-shot timesteps with t = 0 for global groups, reproducible per-micro-batch noise."""

import torch

from lct_train.model.layout import GroupSpec, SceneSpec, build_packed_meta
from lct_train.train.loss import bucket_sums, micro_generator, noise_batch, shot_losses

PATCH_DIM = 6
DUMMY = (1, 1, 2)


def scenes():
    a = SceneSpec((GroupSpec(2, DUMMY, is_global=True), GroupSpec(3, (1, 2, 2)),
                   GroupSpec(1, (2, 1, 3))))
    b = SceneSpec((GroupSpec(4, (1, 1, 1)),))
    c = SceneSpec((GroupSpec(1, DUMMY, is_global=True), GroupSpec(2, (1, 3, 1))))
    return [a, b, c]


def reference_shot_losses(pred, target, specs):
    out, row = [], 0
    for spec in specs:
        for g in spec.groups:
            n = g.video_len
            if not g.is_global:
                out.append((pred[row:row + n] - target[row:row + n]).square().mean())
            row += n
    return torch.stack(out)


def test_shot_losses_match_a_loop_over_shots():
    specs = scenes()
    meta = build_packed_meta(specs)
    pred, target = torch.randn(meta.num_video, PATCH_DIM), torch.randn(meta.num_video, PATCH_DIM)
    torch.testing.assert_close(shot_losses(pred, target, meta),
                               reference_shot_losses(pred, target, specs))


def test_dummy_tokens_never_in_the_loss():
    meta = build_packed_meta(scenes())
    pred, target = torch.randn(meta.num_video, PATCH_DIM), torch.randn(meta.num_video, PATCH_DIM)
    before = shot_losses(pred, target, meta)
    pred[meta.video_shot < 0] = 1e6
    torch.testing.assert_close(shot_losses(pred, target, meta), before)


def test_global_mean_does_not_depend_on_packing():
    """sum(micro shot losses) / global shot count == mean over all shots, any split."""
    specs = scenes()
    all_meta = build_packed_meta(specs)
    pred = torch.randn(all_meta.num_video, PATCH_DIM)
    target = torch.randn(all_meta.num_video, PATCH_DIM)
    whole = shot_losses(pred, target, all_meta).mean()
    split_total, row = 0.0, 0
    for part in (specs[:1], specs[1:]):
        meta = build_packed_meta(part)
        rows = slice(row, row + meta.num_video)
        split_total = split_total + shot_losses(pred[rows], target[rows], meta).sum()
        row += meta.num_video
    torch.testing.assert_close(split_total / all_meta.num_shots, whole)


def test_noise_batch_per_shot_t_and_global_zero():
    meta = build_packed_meta(scenes())
    video = torch.randn(meta.num_video, PATCH_DIM)
    video[meta.video_shot < 0] = 0
    noised = noise_batch(video, meta, micro_generator(torch.device("cpu"), 0, 1, 0),
                         mean=0.0, std=1.0)
    assert noised.t_shot.shape == (meta.num_shots,)
    is_global = torch.tensor([g.is_global for spec in meta.specs for g in spec.groups])
    assert torch.all(noised.t_group[is_global] == 0)
    torch.testing.assert_close(noised.t_group[meta.shot_group], noised.t_shot)
    # t = 0 on the global group: its dummy tokens stay clean (zero)
    assert torch.all(noised.z_t[meta.video_shot < 0] == 0)
    # rows of one shot share that shot's t: z_t = (1-t) z0 + t eps with eps = target + z0
    eps = noised.target + video
    t_tok = noised.t_group[meta.video_group][:, None]
    torch.testing.assert_close(noised.z_t, (1 - t_tok) * video + t_tok * eps)


def test_noise_is_reproducible_and_differs_per_micro_batch():
    meta = build_packed_meta(scenes())
    video = torch.randn(meta.num_video, PATCH_DIM)

    def draw(step, micro):
        gen = micro_generator(torch.device("cpu"), 7, step, micro)
        return noise_batch(video, meta, gen, mean=0.0, std=1.0).z_t

    torch.testing.assert_close(draw(3, 1), draw(3, 1))
    assert not torch.allclose(draw(3, 1), draw(3, 0))
    assert not torch.allclose(draw(3, 1), draw(4, 1))


def test_bucket_sums():
    values, t = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0.1, 0.2, 0.7, 1.0])
    out = bucket_sums(values, t, 2)
    torch.testing.assert_close(out, torch.tensor([[3.0, 7.0], [2.0, 2.0]]))
