"""Sweeps: one training run per point of a grid over translation amounts, languages, seeds or any config key,
each in its own workdir and process, skipped when finished, resumed when interrupted, on an executor backend
(`pivot_jax.launch`), with the results of every point collected into one table for the scaling-law tools."""
