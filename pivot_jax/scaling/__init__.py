"""Translation-quality scaling laws (x-LLaMA's study) and data budgets allocated across languages with them.

    laws      the candidate laws, each with its formula, bounds, starting points and derivatives
    table     a results file (`sweep collect`'s results.csv / results.jsonl, or any such CSV) -> points per group
    fit       robust fits, bootstrap intervals, leave-one-out and extrapolation errors, model selection
    joint     one exponent shared by every group (per-group scale), compared with the separate fits
    allocate  the amounts per language that maximise the weighted predicted metric under a budget
    check     an allocation's predictions against the MuIT runs trained on it and on the uniform split
    plots     fits.png, allocation.png and check.png

`python -m pivot_jax.scaling fit | allocate | check` is the command over them.
"""

from __future__ import annotations

from pivot_jax.errors import PivotError


class ScalingError(PivotError, ValueError):
    """Bad input to a fit or an allocation, named: the file, column, group or value, and what was expected."""
