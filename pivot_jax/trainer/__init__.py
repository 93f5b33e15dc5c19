"""The trainer as a library: the step maths (`step`), the step compiled for a config without data (`build`), the
run's data (`data`), the evaluations made while training (`evals`), and the run itself (`loop`)."""
