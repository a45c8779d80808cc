"""Ablation of the camera refiner: the same network, data and schedule without the layout (a learned
correction of the ego warp alone), so that what the layout buys is measured.

    .venv/bin/drivesim train --config experiments/camera_nolayout.py --workdir runs/camera_small_nolayout
    .venv/bin/drivesim eval-wm --camera runs/camera_small_nolayout/camera.npz \
        --out experiments/results/ablations/eval_wm_camera_nolayout.json
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("camera_small", Path(__file__).with_name("camera_small.py"))
_small = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_small)


def get_config(quick: bool = False):
    return _small.get_config(quick=quick, layout=False)
