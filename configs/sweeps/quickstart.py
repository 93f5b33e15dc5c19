"""The scaling-law loop in minutes on a CPU: the quickstart's small random model trained on 0-1,200 built-in CLDR
translation pairs of two languages (x-LLaMA's protocol: a fixed number of epochs, so compute grows with the
amount), the held-out loss and chrF++ of each point, the fitted laws, and an allocation of 2,000 pairs.

  python -m pivot_jax.sweep --config configs/sweeps/quickstart.py --workdir runs/sweep_quickstart

Arguments: langs (e.g. es+zh), amounts (e.g. 0+75+150+300+600+1200; CLDR has ~1,250 training pairs per
language), seeds (e.g. 0+1), epochs, budget.
Amount 0 is the untrained baseline (no other training data here): plotted, never fitted.
"""

from pathlib import Path

from pivot_jax.config import parse_arg
from pivot_jax.sweep.spec import sweep_config

CONFIGS = Path(__file__).resolve().parents[1]


def get_config(arg=None):
    a = parse_arg(arg, langs="es+zh", amounts="0+75+150+300+600+1200", seeds="0", epochs="2", budget="2000")
    s = sweep_config()
    s.name = "quickstart"
    # One tokenizer (a BPE over both languages' CLDR data) for every point, so their losses compare.
    s.train_config = f"{CONFIGS}/quickstart.py:langs={a.langs}"
    s.overrides = [("data.method", "coit"), ("train.seq_len", 128), ("train.log_every_steps", 10),
                   ("checkpoint.every_steps", 0), ("eval.steps", 2)]
    s.axes = [("language", a.langs.split("+")), ("amount", [int(n) for n in a.amounts.split("+")]),
              ("seed", [int(n) for n in a.seeds.split("+")])]
    s.compute = "epochs"
    s.epochs = float(a.epochs)
    s.eval_config = f"{CONFIGS}/eval/cldr.py:tgt={{language}},limit=40"
    s.parallel = 2
    s.fit.metrics = ["eval_loss", "chrf++"]
    s.fit.law = "auto"
    s.fit.budget = int(a.budget)
    return s
