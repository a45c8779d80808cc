"""The Intelligent Driver Model: one acceleration law for reactive agents and IDM planners."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class IdmParams:
    """The Intelligent Driver Model's parameters (Treiber et al.), for reactive agents and IDM
    planners alike. The defaults are the reactive traffic's; the planners start from
    `drivesim.planners.builtin.PLANNER_IDM`, which keeps a larger standstill gap and brakes harder."""

    target_speed: float = 11.0
    """Desired speed v0 (m/s) where nothing else sets one (planners; reactive agents drive at their
    logged speed)."""
    headway: float = 1.5
    """Desired time gap T to the leader (s)."""
    min_gap: float = 2.0
    """Standstill distance s0 to the leader (m)."""
    max_accel: float = 1.5
    """Maximum acceleration a (m/s^2)."""
    comfort_decel: float = 2.0
    """Comfortable deceleration b (m/s^2)."""
    max_decel: float = 8.0
    """Hardest braking (m/s^2): the law's output is clipped here."""

    def accel(self, v, v0, gap, lead_speed):
        """`idm_accel` with these parameters (broadcasting over the arguments)."""
        return idm_accel(
            v, v0, gap, lead_speed, self.max_accel, self.comfort_decel, self.headway, self.min_gap, self.max_decel
        )


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
