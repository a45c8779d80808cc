"""Tokenizers: small convolutional VAEs from camera images and BEV occupancy to latent grids.

Continuous (KL-regularised) latents rather than a quantised codebook: the dynamics model samples
with few-step flow matching, which needs continuous targets, and a small KL weight keeps the
latents well scaled without the codebook collapse and straight-through tricks of VQ. One camera
VAE is shared by the six views; a learned view embedding tells the decoder which view it renders.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from drivesim.model.config import WorldModelConfig


class Down(nnx.Module):
    """Conv (stride 2) + GroupNorm + SiLU, then a residual 3x3 conv."""

    def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(cin, cout, (4, 4), strides=2, padding="SAME", rngs=rngs)
        self.norm = nnx.GroupNorm(cout, num_groups=min(8, cout), rngs=rngs)
        self.res = nnx.Conv(cout, cout, (3, 3), padding="SAME", rngs=rngs)

    def __call__(self, x):
        x = nnx.silu(self.norm(self.conv(x)))
        return x + self.res(nnx.silu(x))


class Up(nnx.Module):
    """Nearest upsampling x2 + conv + GroupNorm + SiLU, then a residual 3x3 conv."""

    def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(cin, cout, (3, 3), padding="SAME", rngs=rngs)
        self.norm = nnx.GroupNorm(cout, num_groups=min(8, cout), rngs=rngs)
        self.res = nnx.Conv(cout, cout, (3, 3), padding="SAME", rngs=rngs)

    def __call__(self, x):
        b, h, w, c = x.shape
        x = jax.image.resize(x, (b, 2 * h, 2 * w, c), "nearest")
        x = nnx.silu(self.norm(self.conv(x)))
        return x + self.res(nnx.silu(x))


class ConvVAE(nnx.Module):
    """A convolutional VAE: (N, H, W, Cin) -> latents (N, H/2^k, W/2^k, latent) -> (N, H, W, Cout).

    `embed` > 0 adds a learned embedding of an integer condition (the camera view) to the
    decoder's input, so one network can serve several views.
    """

    def __init__(self, cin: int, cout: int, widths, latent: int, embed: int = 0, *, rngs: nnx.Rngs):
        self.stem = nnx.Conv(cin, widths[0], (3, 3), padding="SAME", rngs=rngs)
        chans = [widths[0], *widths]
        self.down = nnx.List([Down(chans[i], chans[i + 1], rngs=rngs) for i in range(len(widths))])
        self.to_latent = nnx.Conv(widths[-1], 2 * latent, (1, 1), rngs=rngs)
        self.from_latent = nnx.Conv(latent, widths[-1], (3, 3), padding="SAME", rngs=rngs)
        rev = list(reversed(chans))
        self.up = nnx.List([Up(rev[i], rev[i + 1], rngs=rngs) for i in range(len(widths))])
        self.head = nnx.Conv(widths[0], cout, (3, 3), padding="SAME", rngs=rngs)
        self.embed = nnx.Embed(embed, widths[-1], rngs=rngs) if embed else None

    def encode(self, x):
        """Mean and log-variance of the latent grid."""
        h = self.stem(x)
        for layer in self.down:
            h = layer(h)
        mean, logvar = jnp.split(self.to_latent(nnx.silu(h)), 2, axis=-1)
        return mean, jnp.clip(logvar, -12.0, 6.0)

    def decode(self, z, condition=None):
        h = self.from_latent(z)
        if self.embed is not None and condition is not None:
            h = h + self.embed(condition)[:, None, None, :]
        for layer in self.up:
            h = layer(h)
        return self.head(nnx.silu(h))


def kl(mean, logvar):
    """KL(q || N(0, 1)) per element, averaged."""
    return 0.5 * jnp.mean(jnp.exp(logvar) + mean**2 - 1.0 - logvar)


class Tokenizers(nnx.Module):
    """The camera VAE (shared by the views) and the occupancy VAE."""

    def __init__(self, cfg: WorldModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.camera = ConvVAE(3, 3, cfg.cam_channels, cfg.cam_latent, embed=cfg.cameras, rngs=rngs)
        self.occupancy = ConvVAE(cfg.num_classes, cfg.num_classes, cfg.occ_channels, cfg.occ_latent, rngs=rngs)

    def encode_cameras(self, images):
        """images (..., 6, H, W, 3) in [-1, 1] -> latent mean, logvar (..., 6, h, w, C)."""
        lead = images.shape[:-3]
        mean, logvar = self.camera.encode(images.reshape((-1,) + images.shape[-3:]))
        return mean.reshape(lead + mean.shape[1:]), logvar.reshape(lead + logvar.shape[1:])

    def decode_cameras(self, z):
        """latents (..., 6, h, w, C) -> images (..., 6, H, W, 3) in about [-1, 1]."""
        lead = z.shape[:-3]
        views = jnp.broadcast_to(jnp.arange(self.cfg.cameras), lead).reshape(-1)
        out = self.camera.decode(z.reshape((-1,) + z.shape[-3:]), views)
        return out.reshape(lead + out.shape[1:])

    def encode_occupancy(self, classes):
        """classes (..., G, G) int -> latent mean, logvar (..., g, g, C)."""
        lead = classes.shape[:-2]
        onehot = jax.nn.one_hot(classes.reshape((-1,) + classes.shape[-2:]), self.cfg.num_classes)
        mean, logvar = self.occupancy.encode(onehot)
        return mean.reshape(lead + mean.shape[1:]), logvar.reshape(lead + logvar.shape[1:])

    def decode_occupancy(self, z):
        """latents (..., g, g, C) -> class logits (..., G, G, classes)."""
        lead = z.shape[:-3]
        out = self.occupancy.decode(z.reshape((-1,) + z.shape[-3:]))
        return out.reshape(lead + out.shape[1:])
