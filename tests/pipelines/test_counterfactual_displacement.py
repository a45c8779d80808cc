"""The counterfactual's agent displacement: only where both the generation and the truth have the agent."""

import numpy as np

from drivesim.pipelines.counterfactual import _displacement


def test_displacement_counts_only_agents_both_have():
    K, steps, A, F = 2, 11, 3, 2
    gen = np.zeros((K, steps, A, 2))
    gen_valid = np.ones((K, steps, A), bool)
    truth = np.zeros((A, F, 2))
    truth[0, :, 0] = 1.0  # agent 0: 1 m off
    truth_valid = np.ones((A, F), bool)
    truth_valid[1] = False  # agent 1: not in the truth
    gen_valid[:, :, 2] = False  # agent 2: dropped by the generation (a log track that ended)
    truth[2] = 500.0
    assert _displacement(gen, gen_valid, truth, truth_valid) == 1.0
    gen_valid[:, :, 0] = False
    assert _displacement(gen, gen_valid, truth, truth_valid) == 0.0  # nothing to compare
