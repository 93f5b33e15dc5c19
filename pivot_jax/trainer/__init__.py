"""The trainer as a library: the step maths (`step`); the run itself is `pivot_jax.train` for now."""
