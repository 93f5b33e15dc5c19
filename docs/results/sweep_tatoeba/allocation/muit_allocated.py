"""MuIT with the translation amounts that `python -m pivot_jax.scaling allocate` chose for a budget of
4,000 pairs (from the fits in FITS). An argument goes on to configs/muit.py (e.g. `:model=llama-7b`).

  python -m pivot_jax.train --config docs/results/sweep_tatoeba/allocation/muit_allocated.py --workdir runs/muit_allocated ...
"""

import importlib.util
from pathlib import Path

import pivot_jax

ARGUMENT = 'langs=es+zh,amounts=es:3703+zh:297'
FITS = 'docs/results/sweep_tatoeba/fits/chrf++/fits.json'
# configs/muit.py of the checkout that pivot_jax is installed from (configs/ is not a package to import).
MUIT = Path(pivot_jax.__file__).resolve().parents[1] / 'configs/muit.py'


def get_config(arg=None):
    spec = importlib.util.spec_from_file_location("muit_config", MUIT)
    muit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(muit)
    return muit.get_config(",".join(filter(None, [ARGUMENT, arg])))
