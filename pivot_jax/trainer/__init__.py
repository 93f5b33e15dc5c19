"""The trainer as a library: the step maths (`step`), the step compiled for a config without data (`build`), the
run's data (`data`). The run itself is still in `pivot_jax.train`."""
