"""`AgentLayout`: the world model's agent boxes as a pytree, and its packed rows on disk."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drivesim.data.types import LAYOUT_ROW, AgentLayout


def _rows(shape, seed=0):
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=shape + (LAYOUT_ROW,)).astype(np.float32)
    rows[..., 6] = rng.integers(0, 4, shape)
    rows[..., 7] = rng.integers(0, 2, shape)
    return rows


@pytest.mark.parametrize("lead", [(), (2, 3)])
def test_packed_rows_round_trip_on_host_and_device(lead):
    rows = _rows(lead + (5,))
    host = AgentLayout.from_packed(rows)
    assert isinstance(host.xy, np.ndarray) and host.xy.shape == lead + (5, 2) and host.size.shape == lead + (5, 3)
    assert host.category.dtype == np.int32 and host.valid.dtype == bool and host.slots == 5
    np.testing.assert_array_equal(host.packed(), rows)
    dev = AgentLayout.from_packed(jnp.asarray(rows))
    np.testing.assert_array_equal(np.asarray(dev.packed()), rows)
    assert AgentLayout.from_packed(dev) is dev


def test_a_layout_is_a_pytree_that_vmaps_and_jits():
    lay = AgentLayout.from_packed(jnp.asarray(_rows((4, 6))))
    n = jax.jit(jax.vmap(lambda a: jnp.sum(a.valid)))(lay)
    np.testing.assert_array_equal(np.asarray(n), np.asarray(lay.valid).sum(-1))
    empty = AgentLayout.empty((2,), 3)
    assert empty.valid.shape == (2, 3) and not bool(jnp.any(empty.valid))


def test_rows_of_the_wrong_width_are_refused():
    with pytest.raises(ValueError, match="8 columns"):
        AgentLayout.from_packed(np.zeros((3, 7), np.float32))
