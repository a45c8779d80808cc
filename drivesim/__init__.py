"""drivesim: a JAX driving world-model simulator.

Replay nuScenes-format driving logs, generate counterfactual scenarios and score planners in
closed loop. See README.md for the tour and DESIGN.md for the architecture.
"""

__version__ = "0.1.0"
