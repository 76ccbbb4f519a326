"""FP-FOMM networks: shapes at two resolutions, one grid convention, motion through the Jacobians, FOMM
keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data, transform

from augmenter.errors import UserError
from augmenter.model.checkpoint import import_fomm_checkpoint, import_state, save_checkpoint
from augmenter.model.config import merge_config
from augmenter.model.dense_motion import relative_jacobians
from augmenter.model.grid import coordinate_grid, warp
from augmenter.model.networks import Networks, count_parameters

SMALL = {
    "model": {
        "kp_detector": {
            "block_expansion": 8,
            "max_features": 32,
            "num_blocks": 2,
            "scale_factor": 0.5,
            "head_kernel": 3,
        },
        "dense_motion": {
            "block_expansion": 8,
            "max_features": 32,
            "num_blocks": 2,
            "scale_factor": 0.5,
            "head_kernel": 3,
        },
        "generator": {
            "block_expansion": 8,
            "max_features": 32,
            "num_down_blocks": 2,
            "num_bottleneck_blocks": 1,
        },
        "discriminator": {"block_expansion": 8, "max_features": 32, "num_blocks": 3},
    }
}


def small_config(**generator: object) -> dict:
    config = merge_config(SMALL)
    config["model"]["generator"].update(generator)
    return config


def real_faces(size: int, count: int = 2) -> torch.Tensor:
    """(count, 3, size, size) crops of a real photo in [0, 1]."""
    image = data.astronaut()[30:230, 140:340] / 255.0
    crops = [
        transform.resize(image[i * 10 : 180 + i * 10, i * 5 : 180 + i * 5], (size, size))
        for i in range(count)
    ]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()


def face_points(batch: int) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(batch, 18, 2) * 1.2 - 0.6


@pytest.mark.parametrize("size", [64, 48])
@pytest.mark.parametrize("output", ["decoder", "blend", "warp"])
def test_shapes_and_dtypes_at_two_resolutions(size: int, output: str) -> None:
    torch.manual_seed(0)
    networks = Networks(small_config(output=output)).eval()
    images = real_faces(size)
    kp = networks.kp_detector(images, face_points(2))
    assert kp["value"].shape == (2, 18, 2) and kp["jacobian"].shape == (2, 18, 2, 2)
    assert kp["jacobian"].dtype == torch.float32
    out = networks.generator(images, kp, kp)
    assert out["prediction"].shape == (2, 3, size, size) and out["prediction"].dtype == torch.float32
    assert out["deformed"].shape == (2, 3, size, size)
    assert out["occlusion_map"].shape == (2, 1, size // 2, size // 2)
    assert 0 <= float(out["prediction"].detach().min()) and float(out["prediction"].detach().max()) <= 1
    scores = networks.discriminator(out["prediction"])
    assert scores[1][1].ndim == 4
    if output == "warp":  # the warped pixels are the frame; the decoder is not run
        assert out["prediction"] is out["deformed"] and "decoded" not in out


@pytest.mark.parametrize("background", [True, False])
def test_identity_motion_reproduces_the_source(background: bool) -> None:
    """Same keypoints and Jacobians for source and driving → the warped source is the source (float
    rounding)."""
    config = small_config()
    config["model"]["dense_motion"]["background"] = background
    networks = Networks(config).eval()
    with torch.no_grad():  # any Jacobians, not only the untrained identity
        networks.kp_detector.jacobian.weight.normal_(0, 0.05)
        images = real_faces(64)
        kp = networks.kp_detector(images, face_points(2))
        out = networks.generator(images, kp, kp)
    assert float((out["deformed"] - images).abs().max()) < 2e-5
    # The test can fail: the other align_corners convention shifts the same identity by half a pixel.
    grid = coordinate_grid(64, 64)[None].expand(2, -1, -1, -1)
    assert float((warp(images, grid) - images).abs().max()) < 2e-5
    shifted = F.grid_sample(images, grid, align_corners=False, padding_mode="border")
    assert float((shifted - images).abs().max()) > 1e-2


def test_blend_output_keeps_the_warped_pixels_where_visible() -> None:
    networks = Networks(small_config(output="blend")).eval()
    with torch.no_grad():
        networks.generator.dense_motion_network.occlusion.bias.fill_(30.0)  # everything visible
        images = real_faces(64)
        kp = networks.kp_detector(images, face_points(2))
        out = networks.generator(images, kp, kp)
    assert float((out["prediction"] - images).abs().max()) < 1e-4
    assert float((out["decoded"] - images).abs().mean()) > 1e-2  # the untrained decoder alone would not


def test_bicubic_pixel_warp_keeps_the_texture_a_bilinear_one_blurs() -> None:
    """At a half-pixel offset bilinear sampling averages neighbours (a low-pass filter); bicubic keeps more of
    the fine texture. Through the generator: identity motion gives the source back, values in [0, 1]."""
    images = real_faces(64)
    grid = coordinate_grid(64, 64)[None].expand(2, -1, -1, -1) + torch.tensor([1.0 / 63, 0.0])  # 0.5 px

    def detail(image: torch.Tensor) -> float:  # mean |horizontal second difference| inside the frame
        return float((image[..., 2:-2, 2:] - 2 * image[..., 2:-2, 1:-1] + image[..., 2:-2, :-2]).abs().mean())

    bilinear, bicubic = warp(images, grid, mode="bilinear"), warp(images, grid, mode="bicubic")
    assert detail(bicubic) > 1.2 * detail(bilinear)
    networks = Networks(small_config(output="blend", pixel_interpolation="bicubic")).eval()
    with torch.no_grad():
        kp = networks.kp_detector(images, face_points(2))
        out = networks.generator(images, kp, kp)
    assert float((out["deformed"] - images).abs().max()) < 1e-4
    assert float(out["deformed"].min()) >= 0.0 and float(out["deformed"].max()) <= 1.0
    with pytest.raises(ValueError, match="pixel_interpolation"):
        Networks(small_config(pixel_interpolation="nearest"))


def test_gradients_reach_the_jacobian_head() -> None:
    torch.manual_seed(0)
    networks = Networks(small_config())
    images = real_faces(64)
    points = face_points(2)
    kp_source = networks.kp_detector(images[:1], points[:1])
    kp_driving = networks.kp_detector(images[1:], points[1:] + 0.02)
    out = networks.generator(images[:1], kp_driving, kp_source)
    (out["prediction"] - images[1:]).abs().mean().backward()
    gradient = networks.kp_detector.jacobian.weight.grad
    assert gradient is not None and float(gradient.abs().sum()) > 0


def mouth_warp(image: torch.Tensor, amplitude_px: float) -> torch.Tensor:
    """Move the skin around the image's lower middle up by `amplitude_px` (a smooth, local micro-motion)."""
    size = image.shape[-1]
    grid = coordinate_grid(size, size)
    centre = torch.tensor([0.0, 0.4])
    weight = torch.exp(-((grid - centre) ** 2).sum(-1) / (2 * 0.25**2))
    sampling = grid.clone()
    sampling[..., 1] += amplitude_px * 2 / (size - 1) * weight
    return warp(image, sampling[None].expand(image.shape[0], -1, -1, -1))


def test_relative_jacobian_departs_from_identity_with_motion_amplitude() -> None:
    torch.manual_seed(3)
    networks = Networks(small_config()).eval()
    with torch.no_grad():
        networks.kp_detector.jacobian.weight.normal_(0, 0.05)
        source = real_faces(64, 1)
        points = face_points(1)
        kp_source = networks.kp_detector(source, points)
        departures = []
        for amplitude in (0.0, 1.0, 2.0, 4.0):
            kp_driving = networks.kp_detector(mouth_warp(source, amplitude), points)
            relative = relative_jacobians(kp_source, kp_driving)
            departures.append(float((relative - torch.eye(2)).abs().mean()))
    assert departures[0] < 1e-5
    assert departures[1] < departures[2] < departures[3]


def test_configs_ship_and_tiny_is_small() -> None:
    from augmenter.model.config import load_config

    tiny = Networks(load_config("tiny-64"))
    assert count_parameters(tiny.kp_detector) + count_parameters(tiny.generator) < 1_000_000
    seed = load_config("seed-64")
    assert seed["model"]["dense_motion"]["background"] and not seed["train"]["tracked_keypoints"]
    paper = load_config("paper-256")
    assert paper["model"]["size"] == 256 and paper["model"]["kp_detector"]["max_features"] == 1024


def fomm_state_dict(config: dict) -> dict[str, dict[str, torch.Tensor]]:
    """A state dict written with FOMM's own key names (modules/keypoint_detector.py, generator.py, …)."""
    kp, dm, gen, disc = (
        config["model"][k] for k in ("kp_detector", "dense_motion", "generator", "discriminator")
    )
    e = kp["block_expansion"]
    k = kp["head_kernel"]
    kp_out = e + 4  # hourglass out_filters = block_expansion + in_features (3 colours + prior)
    with_background = (18 + 1) * 4
    return {
        "kp_detector": {
            "predictor.encoder.down_blocks.0.conv.weight": torch.full((2 * e, 4, 3, 3), 0.5),
            "predictor.encoder.down_blocks.0.norm.running_mean": torch.full((2 * e,), 0.25),
            "predictor.decoder.up_blocks.0.conv.weight": torch.zeros(e * 2, e * 4, 3, 3),
            "kp.weight": torch.full((18, kp_out, k, k), 0.125),
            "jacobian.weight": torch.zeros(72, kp_out, k, k),
            "jacobian.bias": torch.tensor([1.0, 0.0, 0.0, 1.0] * 18),
            "down.weight": torch.ones(3, 1, 5, 5) / 25,  # scale 0.5 → σ 0.5 → 5×5 kernel
        },
        "generator": {
            "first.conv.weight": torch.full((gen["block_expansion"], 3, 7, 7), 0.01),
            "bottleneck.r0.conv1.weight": torch.zeros(32, 32, 3, 3),
            "final.weight": torch.zeros(3, gen["block_expansion"], 7, 7),
            "dense_motion_network.hourglass.encoder.down_blocks.0.conv.weight": torch.zeros(
                2 * dm["block_expansion"], with_background, 3, 3
            ),
            "dense_motion_network.mask.weight": torch.zeros(
                19, dm["block_expansion"] + with_background, 7, 7
            ),
            "dense_motion_network.occlusion.bias": torch.tensor([0.75]),
        },
        "discriminator": {
            "discs.1.down_blocks.0.conv.weight_orig": torch.full((2 * disc["block_expansion"], 3, 4, 4), 0.3),
            "discs.1.conv.bias": torch.tensor([0.5]),
        },
        "optimizer_generator": {"state": {}},
    }


def test_fomm_named_state_dict_loads_where_shapes_match(tmp_path) -> None:
    """import_state (the lenient primitive) copies what fits and reports the rest; the file importer refuses
    the same partial file in one line instead of leaving weights random."""
    config = small_config()
    config["model"]["dense_motion"].update(background=True, head_kernel=7)  # FOMM's layout
    networks = Networks(config)
    state = fomm_state_dict(config)
    state["kp_detector"]["not_a_fomm_key.weight"] = torch.zeros(1)
    state["generator"]["first.norm.weight"] = torch.zeros(99)  # wrong shape: reported, not loaded
    path = tmp_path / "vox-cpk.pth.tar"
    save_checkpoint(path, state)
    with pytest.raises(UserError, match=r"vox-cpk.pth.tar: kp_detector\.\S+ is .* in the file but"):
        import_fomm_checkpoint(path, networks)
    report = import_state(networks, state)
    assert "predictor.encoder.down_blocks.0.conv.weight" in report.matched["kp_detector"]
    assert len(report.matched["kp_detector"]) == 7
    assert len(report.matched["generator"]) == 6 and len(report.matched["discriminator"]) == 2
    assert report.unexpected["kp_detector"] == ["not_a_fomm_key.weight"]
    assert report.shape_mismatch["generator"] == ["first.norm.weight"]
    assert "first.norm.weight" in report.missing["generator"]
    kp = networks.kp_detector
    assert bool((kp.predictor.encoder.down_blocks[0].conv.weight == 0.5).all())
    assert bool((kp.down.weight == 1 / 25).all())
    assert float(kp.predictor.encoder.down_blocks[0].norm.running_mean[0]) == 0.25
    assert float(networks.generator.dense_motion_network.occlusion.bias.detach()) == 0.75
    assert float(networks.discriminator.discs["1"].conv.bias.detach()) == 0.5
    assert "kp_detector: 7 matched" in report.summary()


def test_our_networks_state_dict_round_trips_through_the_importer() -> None:
    config = small_config()
    source, target = Networks(config), Networks(config)
    report = import_state(
        target,
        {name: getattr(source, name).state_dict() for name in ("kp_detector", "generator", "discriminator")},
    )
    assert all(not missing for missing in report.missing.values())
    assert torch.equal(target.generator.final.weight, source.generator.final.weight)


def test_vgg19_perceptual_loss_loads_a_torchvision_state_dict(tmp_path) -> None:
    from augmenter.model.losses import ReconstructionLoss, VGG19Features

    torch.manual_seed(0)
    reference = VGG19Features()
    state = {k: v for k, v in reference.state_dict().items() if k.startswith("features.")}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision files carry the classifier too
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    loaded = VGG19Features.from_file(path)
    assert torch.equal(loaded.features[0].weight, reference.features[0].weight)
    loss = ReconstructionLoss([1.0, 0.5], loaded)
    assert "VGG19" in loss.description
    images = real_faces(32)
    assert float(loss(images, images)) == 0.0
    assert float(loss(images[:1], images[1:])) > 0.0
    assert "replaces the perceptual loss" in ReconstructionLoss([1.0], None).description
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(UserError, match="VGG19"):
        VGG19Features.from_file(tmp_path / "wrong.pth")
