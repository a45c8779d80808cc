"""`small` with ego-motion compensation (`motion_warp`): each frame's BEV tokens also see the
previous frame's BEV latents warped by the known ego motion. Same tokenizers, data and schedule as
`wm_small` (the tokenizer stage is identical, so it can be reused):

    .venv/bin/drivesim train --config experiments/wm_small_warp.py --workdir runs/wm_small_warp
    .venv/bin/drivesim eval-wm --checkpoint runs/wm_small_warp/world_model.npz --out experiments/results/eval_wm_small_warp.json
"""

import dataclasses
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("wm_small", Path(__file__).with_name("wm_small.py"))
_small = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_small)


def get_config(quick: bool = False):
    exp = _small.get_config(quick)
    return dataclasses.replace(exp, model=dataclasses.replace(exp.model, motion_warp=True))
