"""The functional simulator: dynamics, agents, engines and the compiled closed-loop rollout."""
