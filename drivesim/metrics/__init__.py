"""Planner scores: oriented-box geometry (`geometry`) and the NAVSIM PDMS / nuPlan CLS-style
closed-loop scores (`pdms`), pure JAX, written for one scenario and `vmap`ped for batches."""
