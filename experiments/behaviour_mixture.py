"""Ablation of the behaviour model's head: a Gaussian mixture over (accel, yaw rate) in place of
motion tokens, on the data and schedule of the first token model (1,200 plain scenes, 4,000 steps;
`--head tokens` below gives that model back), so that only the head differs.

    .venv/bin/drivesim train --config experiments/behaviour_mixture.py --workdir runs/behaviour_mixture
    .venv/bin/python experiments/behaviour_eval.py --model runs/behaviour_mixture/behaviour.npz \
        --out experiments/results/ablations/behaviour_eval_mixture_1200.json
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("behaviour_small", Path(__file__).with_name("behaviour_small.py"))
_small = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_small)


def get_config(quick: bool = False, head: str = "mixture"):
    import dataclasses

    exp = _small.get_config(quick=quick, head=head)
    if quick:
        return exp
    return dataclasses.replace(
        exp,
        data=dataclasses.replace(exp.data, edited_seeds=(), pushed_seeds=()),
        train=dataclasses.replace(exp.train, steps=4000),
    )
