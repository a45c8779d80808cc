"""The world model's configuration (one frozen dataclass; experiments pick the sizes)."""

from __future__ import annotations

import dataclasses

import numpy as np

MOTION_SCALE = np.array([5.0, 1.0, 0.3], np.float32)
"""Typical ego motion per 0.5 s (dx, dy, dyaw): the model sees motion divided by this."""
OCC_EXTENT = 40.0
"""Half-size of the BEV grid (m)."""


REFINE_FIELDS = ("occ_refine", "refine_channels", "refine_gap", "refine_prior")


@dataclasses.dataclass(frozen=True)
class WorldModelConfig:
    """Sizes of the tokenizers and the dynamics transformer, and what the model sees."""

    frame_size: tuple[int, int] = (64, 36)
    """(width, height) of the cache frames the model reads (`drivesim cache --image-size`)."""
    image_size: tuple[int, int] = (64, 32)
    """(width, height) of the camera images the model works on (cache frames are centre-cropped)."""
    cam_channels: tuple[int, ...] = (32, 64, 96)
    """Camera encoder widths; each stage halves the resolution (3 stages: 64x32 -> 8x4)."""
    cam_latent: int = 8
    """Channels of the camera latent grid."""
    occ_downsample: int = 2
    """The cached BEV grid (160x160 at 0.5 m) is max-pooled by this factor (class ids are ordered
    by priority, so max-pooling keeps agents over markings over road)."""
    occ_channels: tuple[int, ...] = (32, 64, 96)
    """Occupancy encoder widths; each stage halves the resolution (80x80 -> 10x10)."""
    occ_latent: int = 16
    """Channels of the occupancy latent grid."""
    occ_patch: int = 2
    """BEV latent cells per transformer token along each axis (2: a 10x10 grid gives 25 tokens)."""
    d_model: int = 128
    """Width of the dynamics transformer."""
    heads: int = 4
    layers: int = 3
    mlp_ratio: int = 2
    history: int = 4
    """Context keyframes (2 Hz): 2 s."""
    future: int = 6
    """Predicted keyframes per training clip (2 Hz): 3 s."""
    max_horizon: int = 40
    """Most keyframes one rollout may generate (20 s): the sliding window keeps memory flat, but
    quality decays far beyond the trained `future`."""
    sample_steps: int = 4
    """Euler steps of the flow-matching sampler per generated frame."""
    motion_warp: bool = False
    """Ego-motion compensation: each frame's BEV tokens also see the previous frame's BEV latents
    warped into this frame by the known ego motion (bilinear), so the map need not be moved by
    attention alone."""
    layout_dropout: float = 0.5
    """Chance, in training, that a frame's agent layout is hidden (so the model also runs free)."""
    bev_weight: float = 2.0
    """Weight of the BEV tokens in the dynamics loss (cameras weigh 1)."""
    kl_weight: float = 1e-4
    """KL weight of the tokenizers (small: continuous, well-scaled latents, not a generative prior)."""
    occ_refine: bool = False
    """Refine each decoded BEV grid with a reference: the last known grid (the last context frame,
    later the model's own), moved by the known ego motion into this frame at full resolution
    (`drivesim.model.refine`). The coarse latents say what changed; the reference keeps the map
    and the agents' shapes sharp."""
    refine_channels: tuple[int, ...] = (32, 48, 64)
    """Widths of the refiner's U-Net (each stage halves the resolution: 80x80 -> 20x20)."""
    refine_gap: int = 6
    """Most keyframes between the reference and the decoded frame: a longer rollout re-anchors on
    its own decoded grid every this many keyframes (the refiner is trained on gaps 1 .. this)."""
    refine_prior: float = 0.5
    """The reference's weight in the refiner's prior (the decoder's probabilities get the rest).
    Above 0.5 the reference's class wins wherever it knows one unless the learned correction says
    otherwise; at 0.5 a confident decoder ties with it."""
    num_classes: int = 9
    """Occupancy classes (drivesim.data.classes)."""
    cameras: int = 6

    @property
    def window(self) -> int:
        """Frames the transformer attends over (history + future)."""
        return self.history + self.future

    @property
    def occ_grid(self) -> int:
        return 160 // self.occ_downsample

    @property
    def cam_grid(self) -> tuple[int, int]:
        """(rows, cols) of a view's latent grid."""
        f = 2 ** len(self.cam_channels)
        return self.image_size[1] // f, self.image_size[0] // f

    @property
    def occ_latent_grid(self) -> int:
        return self.occ_grid // 2 ** len(self.occ_channels)

    @property
    def cam_tokens(self) -> int:
        """Transformer tokens per frame from the cameras (2x2 latent patches, all views)."""
        r, c = self.cam_grid
        return self.cameras * (r // 2) * (c // 2)

    @property
    def occ_tokens(self) -> int:
        return (self.occ_latent_grid // self.occ_patch) ** 2

    @classmethod
    def tiny(cls, **overrides) -> WorldModelConfig:
        """The tiny model of the tests and smoke runs (builds and samples in seconds on a CPU);
        `overrides` replace fields (e.g. `occ_refine=True`, `motion_warp=True`)."""
        base = dict(
            cam_channels=(8, 16, 16), cam_latent=4, occ_channels=(8, 16, 16), occ_latent=8, d_model=32, heads=2,
            layers=1, mlp_ratio=2, sample_steps=2, refine_channels=(8, 16, 16),
        )  # fmt: skip
        return cls(**{**base, **overrides})

    def stage_fields(self) -> dict:
        """The config without the refiner's fields: what the tokenizer and dynamics stages depend on
        (their checkpoints stay valid when only the refiner changes)."""
        d = dataclasses.asdict(self)
        for k in REFINE_FIELDS:
            d.pop(k)
        return d

    def validate(self) -> None:
        if not 0.0 < self.refine_prior < 1.0:
            raise ValueError(f"refine_prior {self.refine_prior} must lie strictly between 0 and 1")
        r, c = self.cam_grid
        if r % 2 or c % 2 or r < 2:
            raise ValueError(f"image size {self.image_size} gives a {r}x{c} latent grid; it must be even")
        if self.occ_latent_grid % self.occ_patch:
            raise ValueError(
                f"the {self.occ_latent_grid}x{self.occ_latent_grid} BEV latent grid is not divisible by occ_patch {self.occ_patch}"
            )
        if self.frame_size[0] < self.image_size[0] or self.frame_size[1] < self.image_size[1]:
            raise ValueError(f"frame size {self.frame_size} is smaller than the image size {self.image_size}")
        if self.occ_refine and (self.occ_grid % 2 ** (len(self.refine_channels) - 1) or self.refine_gap < 1):
            raise ValueError(
                f"refiner: {len(self.refine_channels)} stages do not divide the {self.occ_grid}x{self.occ_grid} grid, "
                f"or refine_gap {self.refine_gap} < 1"
            )
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by heads {self.heads}")
