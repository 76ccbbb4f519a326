"""compat "fomm": each convention of the published FOMM / FP-FOMM code, pinned by its formula; FOMM's own
layout as the "fomm" generator; import (strict, with training persons) and export of checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import data, transform
from torch import nn

from augmenter.errors import UserError
from augmenter.generators import load_generator
from augmenter.generators.base import PreparedClip, TargetFace
from augmenter.model.blocks import AntiAliasInterpolation2d
from augmenter.model.checkpoint import (
    export_checkpoint,
    import_checkpoint,
    import_fomm_checkpoint,
    layout_from_state,
    load_checkpoint,
    save_checkpoint,
)
from augmenter.model.config import load_config, merge_config
from augmenter.model.dense_motion import DenseMotionNetwork
from augmenter.model.grid import PADDING_MODES, coordinate_grid, pixels_to_normalized, warp
from augmenter.model.keypoint_detector import KPDetector, keypoint_values, seed_prior_maps
from augmenter.model.networks import Networks, count_parameters

SMALL_KP = {"block_expansion": 8, "max_features": 32, "num_blocks": 2, "head_kernel": 7}


def face(size: int) -> torch.Tensor:
    """(1, 3, size, size) real face crop in [0, 1]."""
    image = transform.resize(data.astronaut()[20:220, 150:350] / 255.0, (size, size))
    return torch.from_numpy(image).permute(2, 0, 1)[None].float()


@pytest.mark.parametrize(("compat", "side"), [("fomm", 16 - 6), ("augmenter", 16)])
def test_keypoint_heads_are_unpadded_under_fomm(compat: str, side: int) -> None:
    """FOMM's 7×7 heads have no padding: a 16×16 feature map gives 10×10 heatmaps (64×64 → 58×58 at 256²)."""
    detector = KPDetector(scale_factor=0.25, compat=compat, **SMALL_KP).eval()
    with torch.no_grad():
        out = detector(face(64), torch.zeros(1, 18, 2))
    assert out["heatmap"].shape == (1, 18, side, side)
    assert out["jacobian"].shape == (1, 18, 2, 2)


class FixedFeatures(nn.Module):
    """Stands in for the hourglass: the heads see features chosen by the test."""

    def __init__(self, features: torch.Tensor) -> None:
        super().__init__()
        self.features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features.expand(x.shape[0], -1, -1, -1)


@pytest.mark.parametrize("keypoints", ["prior", "learned"])
def test_jacobian_and_keypoint_from_a_known_heatmap(keypoints: str) -> None:
    """Heatmap weights 1/4 and 3/4 on two cells → J = ¼ J_a + ¾ J_b and (learned) value = ¼ z_a + ¾ z_b, with
    output cell (i, j) reading feature cell (i + 3, j + 3) through an unpadded 7×7 head."""
    detector = KPDetector(num_kp=1, scale_factor=1.0, keypoints=keypoints, compat="fomm", **SMALL_KP).eval()
    channels, size = detector.predictor.out_filters, 16
    features = torch.zeros(1, channels, size, size)
    features[0, 0] = -1.0  # logit −1/T·10 = −100 everywhere else: weight e^−100, negligible
    cell_a, cell_b = (0, 0), (4, 7)  # heatmap cells (row, col); 10×10 heatmap
    features[0, 0, cell_a[0] + 3, cell_a[1] + 3] = 0.0
    features[0, 0, cell_b[0] + 3, cell_b[1] + 3] = math.log(3.0) / 100.0
    jacobian_a, jacobian_b = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([-1.0, 0.5, 0.25, 2.0])
    for entry in range(4):
        features[0, 1 + entry, cell_a[0] + 3, cell_a[1] + 3] = jacobian_a[entry]
        features[0, 1 + entry, cell_b[0] + 3, cell_b[1] + 3] = jacobian_b[entry]
    detector.predictor = FixedFeatures(features)
    with torch.no_grad():
        for head in (detector.kp, detector.jacobian):
            head.weight.zero_()
            head.bias.zero_()
        detector.kp.weight[0, 0, 3, 3] = 10.0  # centre tap: logit = 10 · feature
        for entry in range(4):
            detector.jacobian.weight[entry, 1 + entry, 3, 3] = 1.0
        out = detector(torch.zeros(1, 3, size, size), torch.zeros(1, 1, 2))
    expected = (0.25 * jacobian_a + 0.75 * jacobian_b).view(2, 2)
    assert torch.allclose(out["jacobian"][0, 0], expected, atol=1e-6)
    assert out["heatmap"].shape[-2:] == (10, 10)
    if keypoints == "learned":
        grid = coordinate_grid(10, 10)  # FOMM: [-1, 1] spans the heatmap
        value = 0.25 * grid[cell_a] + 0.75 * grid[cell_b]
        assert torch.allclose(out["value"][0, 0], value, atol=1e-6)


@pytest.mark.parametrize("compat", ["fomm", "augmenter"])
def test_warp_of_a_shifted_image_pads_zeros_under_fomm(compat: str) -> None:
    """A sparse motion with J = I is a translation: the dense motion network's warped source is the image
    shifted by 3 px, the uncovered columns zero (FOMM) or the edge repeated (augmenter)."""
    image = face(32)
    network = DenseMotionNetwork(
        num_kp=1,
        block_expansion=8,
        max_features=16,
        num_blocks=2,
        scale_factor=1.0,
        background=True,
        head_kernel=3,
        compat=compat,
    ).eval()
    shift = 3
    identity = torch.eye(2)[None, None]
    kp_source = {"value": torch.zeros(1, 1, 2), "jacobian": identity}
    kp_driving = {
        "value": pixels_to_normalized(torch.tensor([[[15.5 - shift, 15.5]]]), 32),
        "jacobian": identity,
    }
    with torch.no_grad():
        moved = network(image, kp_driving, kp_source)["sparse_deformed"][:, 1]
    # output(x) = image(x + p_s − p_d) = image(x + 3 px)
    assert torch.allclose(moved[..., : 32 - shift], image[..., shift:], atol=1e-5)
    uncovered = moved[..., 32 - shift :]
    if compat == "fomm":
        assert float(uncovered.abs().max()) < 1e-6
    else:
        assert torch.allclose(uncovered, image[..., -1:].expand_as(uncovered), atol=1e-5)
    grid = coordinate_grid(32, 32)[None].clone()
    grid[..., 0] += 2 * shift / 31
    assert torch.allclose(warp(image, grid, PADDING_MODES[compat]), moved, atol=1e-5)


def test_seed_prior_peaks_equal_one_at_every_point_on_its_one_based_grid() -> None:
    points = torch.tensor([[[40.0, 80.0], [41.3, 120.7], [200.0, 33.0], [128.0, 128.0]]])
    maps = seed_prior_maps(points, 256, (64, 64))
    assert maps.shape == (1, 4, 64, 64)
    assert torch.equal(maps.amax(dim=(-2, -1)), torch.ones(1, 4))
    # pixel (40, 80) → cells (10, 20) on a grid whose first cell is 1: the peak is 0-based column 9, row 19.
    assert maps[0, 0, 19, 9] == 1.0
    # values under each map's mean are zeroed: every bump is local
    assert float((maps[0, 0] > 0).float().mean()) < 0.5


def test_seed_prior_channel_is_the_detector_input_under_fomm() -> None:
    """The detector's prior channel under "fomm" is the sum of the seed maps over its maximum."""
    detector = KPDetector(scale_factor=0.25, compat="fomm", **SMALL_KP)
    points_px = torch.tensor([[[100.0, 90.0], [150.0, 95.0], [128.0, 180.0]]])
    prior = detector.prior(pixels_to_normalized(points_px, 256), 256, (64, 64))
    summed = seed_prior_maps(points_px, 256, (64, 64)).sum(dim=1, keepdim=True)
    assert torch.allclose(prior, summed / summed.max(), atol=1e-5)


def test_antialias_kernel_is_the_gaussian_formula_and_fomm_takes_every_kth_pixel() -> None:
    scale = 0.25
    sigma = (1 / scale - 1) / 2  # 1.5
    size = 2 * round(4 * sigma) + 1  # 13
    x = np.arange(size) - (size - 1) / 2
    bump = np.exp(-(x**2) / (2 * sigma**2))
    kernel = np.outer(bump, bump) / np.outer(bump, bump).sum()
    fomm = AntiAliasInterpolation2d(3, scale, "fomm")
    assert fomm.weight.shape == (3, 1, size, size)
    assert np.allclose(fomm.weight[1, 0].numpy(), kernel, atol=1e-7)
    image = face(32)
    out = fomm(image)
    assert out.shape == (1, 3, 8, 8)
    padded = np.pad(image[0, 0].numpy(), size // 2)  # zeros outside the frame
    for i, j in ((0, 0), (3, 5), (7, 7)):
        by_hand = float((padded[4 * i : 4 * i + size, 4 * j : 4 * j + size] * kernel).sum())
        assert abs(float(out[0, 0, i, j]) - by_hand) < 1e-5
    ours = AntiAliasInterpolation2d(3, scale, "augmenter")(image)
    assert ours.shape == (1, 3, 8, 8) and float((ours - out).abs().max()) > 1e-3


def test_keypoint_values_follow_the_seeds_scaling_under_fomm() -> None:
    pixels = torch.tensor([[0.0, 128.0], [255.0, 64.0]])
    ours = pixels_to_normalized(pixels, 256)
    assert torch.allclose(keypoint_values(ours, 256, "fomm"), pixels * 2 / 256 - 1, atol=1e-6)
    assert torch.equal(keypoint_values(ours, 256, "augmenter"), ours)


def test_configs_compat_and_old_configs_mean_augmenter() -> None:
    assert load_config("seed-64")["model"]["compat"] == "fomm"
    assert load_config("paper-256")["model"]["compat"] == "fomm"
    assert load_config("tiny-64")["model"]["compat"] == "augmenter"
    old = load_config("tiny-64")
    del (
        old["model"]["compat"],
        old["model"]["kp_detector"]["keypoints"],
    )  # a checkpoint written before the keys
    networks = Networks(old)
    assert networks.compat == "augmenter" and networks.kp_detector.kp.padding == (3 // 2, 3 // 2)
    with pytest.raises(UserError, match="compat"):
        merge_config({"model": {"compat": "seed"}})


def test_vox_256_layout_has_fomms_sizes() -> None:
    """FOMM's vox-256 networks (config/vox-256.yaml): 10 learned keypoints, kp detector + generator 59,790,759
    parameters, counted from the published modules."""
    with torch.device("meta"):
        networks = Networks(load_config("fomm-vox-256"), discriminator=False)
    assert count_parameters(networks.kp_detector) + count_parameters(networks.generator) == 59_790_759
    kp, gen = networks.kp_detector.state_dict(), networks.generator.state_dict()
    assert kp["kp.weight"].shape == (10, 32 + 3, 7, 7) and kp["jacobian.weight"].shape == (40, 35, 7, 7)
    assert kp["predictor.encoder.down_blocks.0.conv.weight"].shape == (64, 3, 3, 3)  # no prior channel
    assert gen["dense_motion_network.mask.weight"].shape == (11, 64 + 11 * 4, 7, 7)
    assert gen["dense_motion_network.down.weight"].shape == (3, 1, 13, 13)
    layout = layout_from_state({"kp_detector": kp, "generator": gen})
    assert layout["kp_detector"]["keypoints"] == "learned" and layout["num_kp"] == 10


# FOMM's layout, narrower: the same structure (10 learned keypoints, 5 blocks at 1/4, unpadded 7×7 heads,
# background motion) at 128², small enough for CI.
NARROW_FOMM = {
    "model": {
        "compat": "fomm",
        "size": 128,
        "num_kp": 10,
        "kp_detector": {"keypoints": "learned", "block_expansion": 4, "max_features": 32, "num_blocks": 5},
        "dense_motion": {"block_expansion": 4, "max_features": 32, "num_blocks": 5},
        "generator": {"block_expansion": 8, "max_features": 32, "num_bottleneck_blocks": 1},
        "discriminator": {"block_expansion": 4, "max_features": 16, "num_blocks": 2},
    }
}


def fomm_file(tmp_path, config: dict, name: str = "vox-cpk.pth.tar") -> tuple:
    torch.manual_seed(0)
    networks = Networks(config).eval()
    with torch.no_grad():
        networks.kp_detector.jacobian.weight.normal_(0, 0.01)
    state = {
        name: getattr(networks, name).state_dict() for name in ("kp_detector", "generator", "discriminator")
    }
    path = tmp_path / name
    torch.save({**state, "epoch": 3}, path)  # as FOMM's training writes it
    return path, networks


def test_fomm_generator_animates_a_clip_from_a_fomm_layout_file(tmp_path) -> None:
    path, networks = fomm_file(tmp_path, merge_config(NARROW_FOMM))
    generator = load_generator(path, size=128)
    assert generator.kind == "fomm" and generator.size == 128 and not generator.training_free
    assert generator.training_subjects == () and generator.training_persons == ()  # unknown
    image = (face(128)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    frames = np.stack([image, image, np.roll(image, 4, axis=1)])
    clip = PreparedClip("c", frames, np.zeros((3, 68, 2), np.float32), 1)
    target = TargetFace("t", "casme2/9", np.roll(image, 6, axis=0), np.zeros((68, 2), np.float32))
    video = generator.animate(clip, target)
    assert video.shape == (3, 128, 128, 3) and video.dtype == np.uint8
    # relative motion: a driving frame equal to the onset drives the target's own keypoints
    with torch.no_grad():
        target_tensor = torch.from_numpy(target.image).permute(2, 0, 1)[None].float() / 255
        kp_target = networks.kp_detector(target_tensor)
        still = networks.generator(target_tensor, kp_target, kp_target)["prediction"]
    expected = (still[0].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(video[0].astype(float) - expected).max() <= 1
    assert np.array_equal(video[0], video[1]) and not np.array_equal(video[0], video[2])
    with pytest.raises(UserError, match="multiple of 128"):
        load_generator(path, size=96)


def test_import_refuses_shape_misfits_naming_a_config_that_fits(tmp_path) -> None:
    path, _ = fomm_file(tmp_path, load_config("seed-64"))
    narrow = Networks(merge_config(NARROW_FOMM))
    # tiny-64 has the landmark TPS motion choice, which no FOMM file carries: only seed-64 fits
    with pytest.raises(UserError, match=r"kp_detector\..* in the file but .*fits config seed-64$"):
        import_fomm_checkpoint(path, narrow, "narrow")
    other, _ = fomm_file(tmp_path, merge_config(NARROW_FOMM), "narrow.pth.tar")
    with pytest.raises(UserError, match="fits a config with num_kp 10, keypoints learned"):
        import_fomm_checkpoint(other, Networks(load_config("seed-64")), "seed-64")
    with pytest.raises(UserError, match="learned-keypoint"):
        load_generator(path)  # an FP-FOMM file is not FOMM's layout


def test_import_records_trained_on_persons_and_export_round_trips(tmp_path) -> None:
    path, networks = fomm_file(tmp_path, load_config("seed-64"))
    out = tmp_path / "imported.pt"
    _, config = import_checkpoint(path, out, trained_on=("p1", "p2"), size=64)
    assert config["model"]["compat"] == "fomm" and config["model"]["kp_detector"]["keypoints"] == "prior"
    generator = load_generator(out)
    assert generator.kind == "fp-fomm" and generator.training_persons == ("p1", "p2")
    assert generator.training_subjects == () and not generator.training_free
    unknown = tmp_path / "unknown.pt"
    import_checkpoint(path, unknown, size=64)
    assert load_generator(unknown).training_persons == ()
    with pytest.raises(UserError, match="already an augmenter checkpoint"):
        import_checkpoint(out, tmp_path / "again.pt")
    exported = tmp_path / "exported.pth.tar"
    notes = export_checkpoint(out, exported)
    assert any("256" in note for note in notes)  # the seed's prior is hard-coded to 256²
    back, _ = load_checkpoint(exported)
    for name in ("kp_detector", "generator", "discriminator"):
        original = getattr(networks, name).state_dict()
        assert set(back[name]) == set(original)
        assert all(torch.equal(back[name][key], original[key]) for key in original)


def test_fomm_file_imported_as_pt_is_the_fomm_kind(tmp_path) -> None:
    path, _ = fomm_file(tmp_path, merge_config(NARROW_FOMM))
    out = tmp_path / "fomm.pt"
    import_checkpoint(path, out, trained_on=("vox",), size=128)
    generator = load_generator(out)
    assert generator.kind == "fomm" and generator.training_persons == ("vox",)
    save_checkpoint(tmp_path / "x.pt", {"step": 1})  # not a checkpoint with networks
    with pytest.raises(UserError, match="nothing to export"):
        export_checkpoint(tmp_path / "x.pt", tmp_path / "y.pth.tar")


def test_checkpoint_import_command_records_persons_and_refuses_in_one_line(tmp_path) -> None:
    """`augmenter checkpoint import` as users run it (the installed console script)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "augmenter"
    path, _ = fomm_file(tmp_path, load_config("seed-64"), "seed.pth.tar")
    out = tmp_path / "seed.pt"

    def run(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(script), *map(str, args)], capture_output=True, text=True, timeout=120)

    done = run(
        "checkpoint", "import", path, "--out", out, "--trained-on", "a,b", "--trained-on", "c", "--size", 64
    )
    assert done.returncode == 0, done.stderr
    assert "fp-fomm, 18 keypoints, compat fomm" in done.stdout
    assert load_checkpoint(out)[0]["training_persons"] == ["a", "b", "c"]
    refused = run("checkpoint", "import", path, "--out", tmp_path / "x.pt", "--size", 60)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
