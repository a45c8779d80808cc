"""The embedded default data: the synthetic nuScenes-format mini set.

    .venv/bin/drivesim synth --out data/synthetic --scenes 10 --seconds 20 --seed 0

(`drivesim demo` and the data verbs without --dataroot build it on first use.) Shrink switch for a
quick local run: `get_config(quick=True)` gives 2 scenes of 8 s.
"""

from drivesim.synth.dataset import SynthConfig


def get_config(quick: bool = False) -> SynthConfig:
    if quick:
        return SynthConfig(scenes=2, seconds=8.0)
    return SynthConfig(scenes=10, seconds=20.0, seed=0, version="v1.0-mini", image_width=160, camera_hz=12)
