"""Training losses: reconstruction pyramid (VGG19 or L1), LSGAN + feature matching, Jacobian equivariance
under random thin-plate-spline warps, and the teacher-flow loss on the dense motion field."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from augmenter.errors import UserError
from augmenter.model.grid import coordinate_grid, resize_map, warp

# torchvision's VGG19 "features" layout: channel counts, "M" = max pool. Indices in the Sequential match
# torchvision's state-dict keys (features.0.weight, ...), so a local torchvision weight file loads as is.
_VGG19_LAYOUT: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    512,
    "M",
)
_VGG_TAPS: tuple[int, ...] = (2, 7, 12, 21, 30)  # after relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG19Features(nn.Module):
    """Frozen VGG19 conv trunk returning relu1_1 … relu5_1 (FOMM's perceptual taps)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in _VGG19_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=False)]
                channels = int(item)
        self.features = nn.Sequential(*layers[: _VGG_TAPS[-1]])
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)

    @classmethod
    def from_file(cls, path: str | Path) -> VGG19Features:
        """Load a torchvision-format VGG19 state dict (keys features.N.weight/bias); classifier keys are
        ignored."""
        path = Path(path)
        if not path.is_file():
            raise UserError(
                f"{path}: VGG19 weights not found; pass a torchvision vgg19 state dict or omit --vgg-weights"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable or unsafe file is the user's to fix
            raise UserError(
                f"{path}: not a loadable weights-only torch file ({type(exc).__name__}); re-save it "
                "with torch.save(model.state_dict())"
            ) from exc
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        model = cls()
        wanted = {k: v for k, v in state.items() if k.startswith("features.")}
        own = model.state_dict()
        usable = {k: v for k, v in wanted.items() if k in own and own[k].shape == v.shape}
        expected = [k for k in own if k.startswith("features.")]
        if len(usable) != len(expected):
            raise UserError(
                f"{path}: holds {len(usable)} of the {len(expected)} VGG19 feature tensors; "
                "pass torchvision's vgg19 state dict"
            )
        model.load_state_dict(usable, strict=False)
        return model

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        out = (image - self.mean) / self.std
        taps = []
        for index, layer in enumerate(self.features, start=1):
            out = layer(out)
            if index in _VGG_TAPS:
                taps.append(out)
        return taps


class ReconstructionLoss(nn.Module):
    """Pyramid loss at the configured scales: VGG19 feature L1 when weights are given, else pixel L1 per
    scale."""

    def __init__(self, scales: list[float], vgg: VGG19Features | None) -> None:
        super().__init__()
        self.scales = [float(s) for s in scales]
        self.vgg = vgg

    @property
    def description(self) -> str:
        if self.vgg is not None:
            return f"VGG19 perceptual pyramid at scales {self.scales}"
        return (
            f"no VGG19 weights: multi-scale pixel L1 at scales {self.scales} replaces the perceptual loss "
            "(pass --vgg-weights FILE for the paper's loss)"
        )

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        height, width = target.shape[-2:]
        total = prediction.new_zeros(())
        for scale in self.scales:
            size = (max(8, round(height * scale)), max(8, round(width * scale)))
            pred_s = prediction if scale == 1 else resize_map(prediction, *size)
            real_s = target if scale == 1 else resize_map(target, *size)
            if self.vgg is None:
                total = total + (pred_s - real_s).abs().mean()
            else:
                with torch.no_grad():
                    real_taps = self.vgg(real_s)
                for pred_tap, real_tap in zip(self.vgg(pred_s), real_taps, strict=True):
                    total = total + (pred_tap - real_tap).abs().mean()
        return total


def lsgan_discriminator_loss(real: dict, fake: dict) -> torch.Tensor:
    """Σ over scales of mean (1 − D(real))² + D(fake)²."""
    return sum(((1 - real[s][1]) ** 2).mean() + (fake[s][1] ** 2).mean() for s in real)


def lsgan_generator_loss(fake: dict) -> torch.Tensor:
    return sum(((1 - fake[s][1]) ** 2).mean() for s in fake)


def feature_matching_loss(real: dict, fake: dict) -> torch.Tensor:
    """L1 between the discriminator's features of real and generated frames (real side detached)."""
    total = 0.0
    for scale in real:
        for real_map, fake_map in zip(real[scale][0], fake[scale][0], strict=True):
            total = total + (real_map.detach() - fake_map).abs().mean()
    return total


class RandomTPS:
    """A random affine + thin-plate-spline map T of normalised coordinates, one per batch item.

    The transformed image is image(T(z)); a point p of the original sits at T⁻¹(p) in it.
    """

    def __init__(
        self,
        batch: int,
        sigma_affine: float,
        sigma_tps: float,
        points_tps: int,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        noise = torch.randn(batch, 2, 3, generator=generator) * sigma_affine
        self.affine = (noise + torch.eye(2, 3)).to(device)
        self.control = coordinate_grid(points_tps, points_tps).view(-1, 2).to(device)
        self.weights = (torch.randn(batch, points_tps**2, generator=generator) * sigma_tps).to(device)

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 2) → T(points)."""
        out = torch.einsum("bij,bnj->bni", self.affine[:, :, :2], points) + self.affine[:, None, :, 2]
        offset = points[:, :, None, :] - self.control[None, None]  # (B, N, C, 2)
        dist2 = offset.pow(2).sum(-1)
        radial = dist2 * torch.log(dist2 + 1e-6)
        return out + (radial * self.weights[:, None, :]).sum(-1, keepdim=True)

    def jacobian(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 2, 2) ∂T/∂z at points (analytic)."""
        offset = points[:, :, None, :] - self.control[None, None]
        dist2 = offset.pow(2).sum(-1)
        factor = (
            (torch.log(dist2 + 1e-6) + dist2 / (dist2 + 1e-6)) * 2.0 * self.weights[:, None, :]
        )  # (B,N,C)
        radial = (factor[..., None] * offset).sum(
            2
        )  # (B, N, 2): ∂/∂z of the radial part (same for x and y rows)
        linear = self.affine[:, None, :, :2].expand(points.shape[0], points.shape[1], 2, 2)
        return linear + radial[..., None, :].expand(-1, -1, 2, -1)

    def inverse(self, points: torch.Tensor, iterations: int = 8) -> torch.Tensor:
        """T⁻¹(points) by Newton steps (T is close to the identity)."""
        estimate = points.clone()
        for _ in range(iterations):
            residual = self(estimate) - points
            estimate = estimate - torch.linalg.solve(self.jacobian(estimate), residual.unsqueeze(-1)).squeeze(
                -1
            )
        return estimate

    def warp_image(self, image: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = image.shape
        grid = coordinate_grid(height, width, device=image.device).view(1, -1, 2).expand(batch, -1, -1)
        return warp(image, self(grid).view(batch, height, width, 2))


def teacher_flow_loss(deformation: torch.Tensor, flow: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Face-masked L1 between the dense motion and the teacher flow, in pixels of a 64-px image.

    deformation: (B, h, w, 2) sampling grid (driving → source, normalised). flow: (B, 2, S, S) teacher
    displacement driving → source in model pixels; mask: (B, 1, S, S) face. Measured in 64-px units so one
    weight means the same at every resolution.
    """
    height, width = deformation.shape[1:3]
    size = flow.shape[-1]
    displacement = (deformation - coordinate_grid(height, width, device=deformation.device)) * (63.0 / 2.0)
    teacher = resize_map(flow, height, width).permute(0, 2, 3, 1) * (63.0 / (size - 1))
    face = resize_map(mask, height, width).permute(0, 2, 3, 1)
    error = ((displacement - teacher).abs() * face).sum()
    return error / face.sum().clamp_min(1.0) / 2.0
