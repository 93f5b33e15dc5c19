"""The trainer's configuration schema: every key a config file or `--config.KEY=VALUE` may set.

Config files in `configs/` start from `base_config()` and change what their method needs (big_vision style:
`--config configs/coit.py:lang=zh,model=llama2-7b`). The schema is locked, so an unknown override key or a
value of the wrong type stops before anything runs.
"""

from __future__ import annotations

from ml_collections import ConfigDict

from pivot_jax.sharding import DEFAULT_RULES


def base_config() -> ConfigDict:
    c = ConfigDict()
    c.seed = 0

    c.model = ConfigDict()
    c.model.preset = "tiny"
    c.model.init_from = ""  # "hf:DIR", "gguf:FILE", "orbax:DIR", or "" for random initialisation
    c.model.param_dtype = "float32"
    c.model.dtype = "float32"
    c.model.remat_policy = "none"
    c.model.scan_layers = True
    c.model.max_seq_len = 0  # 0 = the preset's / checkpoint's
    c.model.vocab_size = 0  # random init only: 0 = the preset's (raise it to fit a real tokenizer)

    c.train = ConfigDict()
    c.train.steps = 100
    c.train.epochs = 0.0  # > 0 (seqio data): steps = epochs over the training examples, packing measured
    c.train.global_batch_size = 8
    c.train.seq_len = 128
    c.train.grad_accum_steps = 1
    c.train.log_every_steps = 10

    c.optimizer = ConfigDict()
    c.optimizer.lr = 1e-3
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_ratio = 0.03
    c.optimizer.weight_decay = 0.0
    c.optimizer.clip_norm = 1.0
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-8

    c.mesh = ConfigDict()
    c.mesh.data = -1  # -1 = all devices left after the other axes
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    c.mesh.axis_rules = [(name, rule) for name, rule in DEFAULT_RULES]

    c.checkpoint = ConfigDict()
    c.checkpoint.every_steps = 0  # 0 = only at the end (and on SIGTERM)
    c.checkpoint.keep = 3
    c.checkpoint.async_save = True

    c.eval = ConfigDict()
    c.eval.every_steps = 0  # held-out loss every N steps when the data has a validation split (0 = off)
    c.eval.steps = 4  # batches per held-out evaluation
    c.eval.generate_every_steps = 0  # run `generate_config` on the current weights every N steps (0 = off)
    c.eval.generate_config = ""  # an eval config, e.g. "configs/eval/cldr.py:tgt=es,limit=50"
    c.eval.generate_at_start = False  # also evaluate the starting weights (step 0): the "before" of report.md

    c.data = ConfigDict()
    c.data.source = "synthetic"  # "synthetic" (reverse task, no files) or "seqio" (the methods below)
    c.data.vocab_size = 256  # synthetic: token ids are drawn below this
    # seqio: which method's mixture, for which languages, from which files (see pivot_jax/data/mixtures.py).
    c.data.method = "coit"  # coit | muit | plug | plug_monolingual | xinstruct
    c.data.langs = "es"  # target language(s), comma-separated
    c.data.pivot = "en"
    c.data.alpaca_pivot = ""  # pivot-language Alpaca (JSON list or JSONL)
    c.data.alpaca_target = ""  # Alpaca in the target language; "{lang}" is replaced by each code
    c.data.alpaca_fields = ""  # field renames "canonical:source,..." (e.g. "output:response")
    c.data.parallel_source = ""  # pivot side of line-aligned pairs ("{lang}" replaced); empty = built-in CLDR
    c.data.parallel_target = ""  # target side
    c.data.translation_amount = ""  # pairs per language: "" all, "1000", or "es:1000,zh:500"
    c.data.translation_directions = "pivot-to-target"  # or "both"
    c.data.xinstruct_file = ""  # X-Instruction records (English instruction, response in X); "{lang}" replaced
    c.data.validation_fraction = 0.02  # held out from the training files for the held-out loss
    c.data.mixing = "examples"  # rates by example count, or weights "translation:2,alpaca:1"
    c.data.overflow = "drop"  # examples longer than train.seq_len: "drop" or "truncate"
    c.data.tokenizer = ""  # hf:DIR | gguf:FILE | orbax:DIR; empty = model.init_from
    c.data.tfds_dir = ""  # set: the file keys above name prepared TFDS datasets in this data_dir instead
    return c


def parse_arg(arg: str | None, **defaults: str) -> ConfigDict:
    """big_vision-style config arguments: `configs/coit.py:lang=zh,model=llama2-7b` -> fields over defaults."""
    values = ConfigDict(dict(defaults))
    for part in (arg or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in defaults:
            raise ValueError(f"config argument {part!r}: expected KEY=VALUE with KEY in {sorted(defaults)}")
        values[key] = value.strip()
    return values


# Training settings reported by the papers (see ../shared/specs/formats.md).
PAPER_SETTINGS = {
    # x-LLaMA (CoIT / MuIT), LLaMA-7B: 3 epochs, lr 2e-5, batch 128, cosine, warmup 0.03, wd 0, length 512.
    "xllama": dict(epochs=3.0, global_batch_size=128, seq_len=512, lr=2e-5, schedule="cosine"),
    # PLUG, LLaMA-2-13B: 4 epochs, lr 5e-6, batch 64, linear, warmup 0.03, wd 0, length 4096.
    "plug": dict(epochs=4.0, global_batch_size=64, seq_len=4096, lr=5e-6, schedule="linear"),
}


def paper_config(paper: str, model: str) -> ConfigDict:
    """`base_config()` with a paper's optimisation settings, bf16 compute over float32 master weights, and
    parameters fully sharded over every device (the papers trained with FSDP)."""
    settings = PAPER_SETTINGS[paper]
    c = base_config()
    c.model.preset = model  # architecture for random init; model.init_from (when set) decides instead
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "float32"
    c.model.remat_policy = "dots_no_batch"
    c.train.epochs = settings["epochs"]
    c.train.global_batch_size = settings["global_batch_size"]
    c.train.seq_len = settings["seq_len"]
    c.optimizer.lr = settings["lr"]
    c.optimizer.schedule = settings["schedule"]
    c.optimizer.warmup_ratio = 0.03
    c.optimizer.weight_decay = 0.0
    c.optimizer.clip_norm = 1.0
    c.mesh.data = 1
    c.mesh.fsdp = -1
    c.checkpoint.every_steps = 500
    c.eval.every_steps = 200
    c.data.source = "seqio"
    return c


def load_config_file(spec: str) -> ConfigDict:
    """`path/to/config.py[:ARGS]` -> that file's `get_config(ARGS)` (what `--config` flags do)."""
    import importlib.util
    from pathlib import Path

    path, _, arg = spec.partition(":")
    if not Path(path).is_file():
        raise FileNotFoundError(f"config file {path!r} does not exist")
    module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)
