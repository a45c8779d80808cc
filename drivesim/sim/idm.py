"""The Intelligent Driver Model: one acceleration law for reactive agents and IDM planners."""

from __future__ import annotations

import jax.numpy as jnp


def idm_accel(v, v0, gap, lead_speed, max_accel, comfort_decel, headway, min_gap, max_decel):
    """IDM acceleration (broadcasting over all arguments).

    v: speed; v0: desired speed; gap: bumper-to-bumper distance to the leader (inf: none);
    lead_speed: the leader's speed along our path. Above the desired speed the car slows down at
    most at `comfort_decel` (Treiber's improved IDM), not with the plain model's sudden braking.
    """
    a, b = max_accel, comfort_decel
    v0 = jnp.maximum(v0, 0.1)
    free = jnp.where(v <= v0, 1.0 - (v / v0) ** 4, -(b / a) * (1.0 - (v0 / jnp.maximum(v, 1e-3)) ** (4.0 * a / b)))
    s_star = min_gap + jnp.maximum(0.0, v * headway + v * (v - lead_speed) / (2.0 * jnp.sqrt(a * b)))
    interact = jnp.where(jnp.isfinite(gap), (s_star / jnp.maximum(gap, 0.05)) ** 2, 0.0)
    return jnp.clip(a * (free - interact), -max_decel, a)
