"""The world model's dynamics stage, data parallel on 8 fake CPU devices, gives the same losses as
on one device for the same global batch."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # a subprocess on 8 fake devices

REPO = Path(__file__).resolve().parents[2]

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax
    import numpy as np
    from drivesim.model.config import WorldModelConfig
    from drivesim.model.tasks import DynamicsTask
    from drivesim.train import TrainConfig, train

    assert len(jax.devices()) == 8, jax.devices()
    cfg = WorldModelConfig.tiny()

    class Clips:  # latent clips as LatentClips holds them: per scene, (T, ...) arrays
        def __init__(self):
            rng = np.random.default_rng(0)
            r, c = cfg.cam_grid
            g = cfg.occ_latent_grid
            self.cam = [rng.normal(size=(14, 6, r, c, cfg.cam_latent)).astype(np.float32) for _ in range(3)]
            self.occ = [rng.normal(size=(14, g, g, cfg.occ_latent)).astype(np.float32) for _ in range(3)]
            self.motion = [rng.normal(size=(14, 3)).astype(np.float32) for _ in range(3)]
            self.layout = [rng.integers(0, 5, (14, cfg.occ_grid, cfg.occ_grid)) for _ in range(3)]
            self.stats = {"note": "random"}

    task = DynamicsTask(Clips(), cfg)
    tc = TrainConfig(steps=3, batch_size=8, learning_rate=1e-3, warmup_steps=1, log_every=1, checkpoint_every=100)
    train(task, tc, sys.argv[1] + "/eight", progress=False)
    train(task, tc, sys.argv[1] + "/one", progress=False, devices=jax.devices()[:1])
    print(json.dumps({"ok": True}))
    """
)


def _losses(workdir: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_dynamics_on_eight_devices_matches_one(tmp_path):
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8"  # keeps conftest's flags
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    run = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path)], capture_output=True, text=True, cwd=REPO, env=env, timeout=600
    )
    assert run.returncode == 0 and json.loads(run.stdout.splitlines()[-1]) == {"ok": True}, run.stderr[-3000:]
    eight, one = _losses(tmp_path / "eight"), _losses(tmp_path / "one")
    assert len(eight) == len(one) == 3 and np.all(np.isfinite(eight))
    np.testing.assert_allclose(eight, one, rtol=2e-4)
    assert json.loads((tmp_path / "eight" / "config.json").read_text())["devices"] == 8
