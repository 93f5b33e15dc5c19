"""The trainer as a library: the step maths (`step`), the run's data (`data`); the run itself is `pivot_jax.train`."""
