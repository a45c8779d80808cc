"""Ablation of the behaviour model's head: a Gaussian mixture over (accel, yaw rate) in place of
motion tokens; everything else as experiments/behaviour_small.py.

    .venv/bin/drivesim train --config experiments/behaviour_mixture.py --workdir runs/behaviour_mixture
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("behaviour_small", Path(__file__).with_name("behaviour_small.py"))
_small = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_small)


def get_config(quick: bool = False):
    return _small.get_config(quick=quick, head="mixture")
