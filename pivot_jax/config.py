"""The trainer's configuration schema: every key a config file or `--config.KEY=VALUE` may set.

Config files in `configs/` start from `base_config()` and change what their method needs (big_vision style:
`--config configs/coit.py:lang=zh,model=llama2-7b`). The schema is locked, so an unknown override key or a
value of the wrong type stops before anything runs.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ml_collections import ConfigDict

from pivot_jax import optimizer as optimizer_lib
from pivot_jax.attention import IMPLEMENTATIONS as ATTENTION_IMPLEMENTATIONS
from pivot_jax.errors import ConfigError
from pivot_jax.model import PRESETS, REMAT_POLICIES
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
    c.model.attention = "auto"  # auto | xla | splash (TPU) | pallas_gpu | cudnn (GPU, unpacked rows): attention.py
    c.model.max_seq_len = 0  # 0 = the preset's / checkpoint's
    c.model.vocab_size = 0  # random init only: 0 = the preset's (raise it to fit a real tokenizer)

    c.train = ConfigDict()
    c.train.steps = 100  # 0: no training, only the evaluations of the starting weights (a baseline)
    c.train.epochs = 0.0  # > 0 (seqio data): steps = epochs over the training examples, packing measured
    c.train.global_batch_size = 8
    c.train.seq_len = 128
    c.train.grad_accum_steps = 1
    c.train.log_every_steps = 10
    c.train.loss_chunk = 0  # > 0: logits for this many positions at a time (never the [batch, len, vocab] tensor)
    c.train.loss_positions = 0  # > 0: loss on at most this many weighted positions per row (more: NaN loss)

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
    c.checkpoint.every_steps = 0  # 0 = only at the end (and on preemption)
    c.checkpoint.keep = 3  # the newest N steps (the final one always among them); 0 = keep every step
    c.checkpoint.async_save = True
    c.checkpoint.fallback = True  # latest step unreadable: move it aside and resume from the newest that restores

    c.eval = ConfigDict()
    c.eval.every_steps = 0  # held-out loss every N steps when the data has a validation split (0 = off)
    c.eval.steps = 4  # batches per held-out evaluation
    c.eval.generate_every_steps = 0  # run `generate_config` on the current weights every N steps (0 = off)
    c.eval.generate_config = ""  # an eval config, e.g. "configs/eval/cldr.py:tgt=es,limit=50"; several: ";" between
    c.eval.generate_at_start = False  # also evaluate the starting weights (step 0): the "before" of report.md
    c.eval.at_end = False  # also run the held-out loss and `generate_config` at the last step (sweep points)
    c.eval.tags = ""  # "KEY=VALUE,..." recorded with this run's results-index records (e.g. "language=es,amount=100")

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

    # Keys (or whole sections) a resumed run may change beyond RESUMABLE: "optimizer.lr,data.langs".
    c.resume_allow = ""
    return c


# ---------------------------------------------------------------------------------------------------------------
# Validation: every key's range, checked before any work, named with its value.

def _at_least(low: float) -> Callable[[Any], bool]:
    return lambda v: math.isfinite(v) and v >= low


def _positive(v: Any) -> bool:
    return math.isfinite(v) and v > 0


def _unit_interval(v: Any) -> bool:  # [0, 1)
    return math.isfinite(v) and 0 <= v < 1


def _axis_size(v: Any) -> bool:
    return v == -1 or v >= 1


def _one_of(*choices: str) -> Callable[[Any], bool]:
    return lambda v: v in choices


DTYPES = ("float32", "bfloat16", "float16")
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (_at_least(0), ">= 0"),
    "model.preset": (lambda v: v in PRESETS, f"one of {sorted(PRESETS)}"),
    "model.param_dtype": (_one_of(*DTYPES), f"one of {DTYPES}"),
    "model.dtype": (_one_of(*DTYPES), f"one of {DTYPES}"),
    "model.remat_policy": (lambda v: v in REMAT_POLICIES, f"one of {sorted(REMAT_POLICIES)}"),
    "model.attention": (_one_of(*ATTENTION_IMPLEMENTATIONS), f"one of {ATTENTION_IMPLEMENTATIONS}"),
    "model.max_seq_len": (_at_least(0), ">= 0 (0 = the model's own)"),
    "model.vocab_size": (_at_least(0), ">= 0 (0 = the preset's)"),
    "train.steps": (_at_least(0), ">= 0"),
    "train.epochs": (_at_least(0), ">= 0 and finite"),
    "train.global_batch_size": (_at_least(1), ">= 1"),
    "train.seq_len": (_at_least(2), ">= 2 (an input token and a target)"),
    "train.grad_accum_steps": (_at_least(1), ">= 1"),
    "train.log_every_steps": (_at_least(1), ">= 1"),
    "train.loss_chunk": (_at_least(0), ">= 0 (0 = the full logits)"),
    "train.loss_positions": (_at_least(0), ">= 0 (0 = every position)"),
    "optimizer.lr": (_positive, "> 0 and finite"),
    "optimizer.schedule": (_one_of(*optimizer_lib.SCHEDULES), f"one of {optimizer_lib.SCHEDULES}"),
    "optimizer.warmup_ratio": (_unit_interval, "in [0, 1)"),
    "optimizer.weight_decay": (_at_least(0), ">= 0 and finite"),
    "optimizer.clip_norm": (_at_least(0), ">= 0 and finite (0 = no clipping)"),
    "optimizer.b1": (_unit_interval, "in [0, 1)"),
    "optimizer.b2": (_unit_interval, "in [0, 1)"),
    "optimizer.eps": (_positive, "> 0 and finite"),
    "mesh.data": (_axis_size, ">= 1, or -1 (all devices left)"),
    "mesh.fsdp": (_axis_size, ">= 1, or -1 (all devices left)"),
    "mesh.tensor": (_axis_size, ">= 1, or -1 (all devices left)"),
    "checkpoint.every_steps": (_at_least(0), ">= 0 (0 = only at the end)"),
    "checkpoint.keep": (_at_least(0), ">= 0 (0 = keep every step)"),
    "eval.every_steps": (_at_least(0), ">= 0 (0 = off)"),
    "eval.steps": (_at_least(1), ">= 1"),
    "eval.generate_every_steps": (_at_least(0), ">= 0 (0 = off)"),
    "data.source": (_one_of("synthetic", "seqio"), "'synthetic' or 'seqio'"),
    "data.vocab_size": (_at_least(2), ">= 2"),
    "data.validation_fraction": (_unit_interval, "in [0, 1)"),
    "data.translation_directions": (_one_of("pivot-to-target", "both"), "'pivot-to-target' or 'both'"),
    "data.overflow": (_one_of("drop", "truncate"), "'drop' or 'truncate'"),
}


def flatten(tree: Mapping[str, Any] | ConfigDict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """("section.key", value) for every leaf of a nested mapping (a ConfigDict or a parsed config.json)."""
    for key, value in tree.items():
        if isinstance(value, (Mapping, ConfigDict)):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def validate(config: ConfigDict) -> None:
    """Every key's range (RANGES) and the rules between keys, each error naming the key and its value."""
    values = dict(flatten(config))
    for key, (ok, expected) in RANGES.items():
        value = values[key]
        try:
            valid = ok(value)
        except TypeError:
            valid = False
        if not valid:
            raise ConfigError(f"config key {key}={value!r}: must be {expected}")
    t = config.train
    if t.global_batch_size % t.grad_accum_steps:
        raise ConfigError(f"train.global_batch_size ({t.global_batch_size}) must be a multiple of "
                          f"train.grad_accum_steps ({t.grad_accum_steps})")
    if t.steps == 0 and t.epochs <= 0 and not (config.eval.at_end or config.eval.generate_at_start):
        raise ConfigError("train.steps=0 trains nothing and evaluates nothing: set train.steps (or train.epochs), "
                          "or eval.at_end=true to evaluate the starting weights (a baseline)")
    if t.epochs > 0 and config.data.source != "seqio":
        raise ConfigError("train.epochs needs data.source='seqio' (the synthetic task has no epochs)")
    if config.eval.generate_every_steps and not config.eval.generate_config:
        raise ConfigError("eval.generate_every_steps is set but eval.generate_config is empty")
    parse_tags(config.eval.tags)
    _allowed_on_resume(config)


def parse_tags(text: str) -> dict[str, str]:
    """`eval.tags` ("language=es,amount=100") as a dict; an item without "=" is an error naming it."""
    tags = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"eval.tags={text!r}: {item!r} is not KEY=VALUE")
        tags[key.strip()] = value.strip()
    return tags


# ---------------------------------------------------------------------------------------------------------------
# Resuming: what defines a run must not change under its checkpoints.

# What a resumed run may change: how it logs, evaluates, checkpoints, lays itself on devices and computes attention
# and the loss (the same values by another route; e.g. resuming a GPU run on TPU).
RESUMABLE = ("train.log_every_steps", "eval", "checkpoint", "mesh", "resume_allow", "model.attention",
             "train.loss_chunk", "train.loss_positions")


def _allowed_on_resume(config: ConfigDict) -> tuple[str, ...]:
    allowed = tuple(k.strip() for k in config.resume_allow.split(",") if k.strip())
    keys = {key for key, _ in flatten(config)}
    for name in allowed:
        if name not in keys and not any(k.startswith(name + ".") for k in keys):
            raise ConfigError(f"config key resume_allow={config.resume_allow!r}: {name!r} is not a config key "
                              "or section")
    return RESUMABLE + allowed


def resume_differences(saved: Mapping[str, Any], config: ConfigDict) -> list[str]:
    """Keys defining the run whose values differ between a workdir's saved config (parsed config.json) and
    `config`, as "key: saved VALUE, now VALUE" lines. Keys one side lacks (another schema version) are not
    compared; with `train.epochs` the step count is derived from the compared data, so it is not compared."""
    allowed = _allowed_on_resume(config)
    old = dict(flatten(saved))
    new = dict(flatten(json.loads(config.to_json_best_effort())))
    derived = {"train.steps"} if new.get("train.epochs", 0) > 0 else set()
    return [f"{key}: saved {old[key]!r}, now {new[key]!r}" for key in sorted(old.keys() & new.keys())
            if old[key] != new[key] and key not in derived
            and not any(key == a or key.startswith(a + ".") for a in allowed)]


def eval_config() -> ConfigDict:
    """The evaluation schema: every key a `configs/eval/*.py` file or `--config.KEY=VALUE` of `python -m
    pivot_jax.evaluate` may set (locked: unknown overrides stop before anything runs)."""
    c = ConfigDict()
    c.set = "translation"  # translation | cldr | qa | alpaca_eval | math
    c.name = ""  # protocol name in results (default: derived from set and languages)
    c.source_lang = "en"
    c.target_lang = "es"
    c.flores_dir = ""  # translation: directory of FLORES-200 `{code}.devtest` files
    c.source_file = ""  # translation: or any two line-aligned files
    c.target_file = ""
    c.file = ""  # qa: SQuAD-layout JSON; alpaca_eval: (X-)AlpacaEval JSON; math: MGSM TSV
    c.qa_prompt_lang = ""  # qa: whose x-LLaMA QA prompt (default target_lang; "en" for XQuAD-es; "none": bare
    #                        question + context, as PLUG data built from a SQuAD-layout file)
    c.held_out_fraction = 0.0  # > 0: only the items training with data.validation_fraction=F held out of this file
    c.limit = 0  # first N items (0 = all)
    c.prompt_format = "alpaca"  # alpaca | chat | plug | plug_monolingual | xinstruct
    c.pivot = "en"
    c.max_new_tokens = 512  # x-LLaMA's inference setting
    c.batch_size = 16
    c.greedy = True
    c.temperature = 1.0
    c.top_p = 1.0
    c.seed = 0
    c.dtype = "float32"
    c.spm_model = ""  # translation: local FLORES SentencePiece model for spBLEU
    c.spm_tokenize = "flores200"  # flores101 | flores200
    c.mesh = ConfigDict({"data": -1, "fsdp": 1, "tensor": 1,
                         "axis_rules": [(name, rule) for name, rule in DEFAULT_RULES]})
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
    path, _, arg = spec.partition(":")
    if not Path(path).is_file():
        raise FileNotFoundError(f"config file {path!r} does not exist")
    module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)
