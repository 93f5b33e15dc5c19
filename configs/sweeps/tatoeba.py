"""A real scaling study on this machine: a small random LLaMA-family model trained on 0-4,000 Tatoeba
English->X sentence pairs (x-LLaMA's translation instructions, 33 rotating templates; fixed epochs, so compute
grows with the amount), each point scored on the pairs held out of the same files (chrF++, BLEU) and by its
held-out loss, then the laws per language and an allocation.

  python -m pivot_jax.sweep --config configs/sweeps/tatoeba.py:data=DATA/tatoeba_parallel --workdir runs/sweep_tatoeba

Arguments: data (the directory of tatoeba.en-{lang}.{en,lang} files), langs (es+zh), amounts, seeds, epochs,
budget. The tokenizer is the quickstart's BPE over the languages' CLDR data (`cldr:`), one for every point.
"""

from pathlib import Path

from pivot_jax.config import parse_arg
from pivot_jax.sweep.spec import sweep_config

CONFIGS = Path(__file__).resolve().parents[1]


def get_config(arg=None):
    a = parse_arg(arg, data="", langs="es+zh", amounts="0+125+250+500+1000+2000+4000", seeds="0", epochs="4",
                  budget="4000")
    if not a.data:
        raise ValueError("configs/sweeps/tatoeba.py needs data=DIR (the tatoeba.en-{lang}.* files)")
    pairs = f"{a.data}/tatoeba.en-{{language}}"
    s = sweep_config()
    s.name = "tatoeba"
    s.train_config = f"{CONFIGS}/quickstart.py:langs={a.langs}"
    s.overrides = [("data.method", "coit"), ("data.parallel_source", f"{a.data}/tatoeba.en-{{lang}}.en"),
                   ("data.parallel_target", f"{a.data}/tatoeba.en-{{lang}}.{{lang}}"),
                   ("data.validation_fraction", 0.02), ("train.log_every_steps", 20), ("checkpoint.every_steps", 0),
                   ("eval.steps", 4)]
    s.axes = [("language", a.langs.split("+")), ("amount", [int(n) for n in a.amounts.split("+")]),
              ("seed", [int(n) for n in a.seeds.split("+")])]
    s.compute = "epochs"
    s.epochs = float(a.epochs)
    s.eval_config = (f"{CONFIGS}/eval/pairs.py:tgt={{language}},src_file={pairs}.en,tgt_file={pairs}.{{language}},"
                     "held_out=0.02")
    s.parallel = 2
    s.fit.metrics = ["chrf++", "eval_loss"]
    s.fit.budget = int(a.budget)
    return s
