"""Evaluation as functions: generate over an eval set (sharded, length-bucketed, resumable), score it with the
set's protocol, judge it against another run, and write `results.json`, `results.md` and the results index.

    results = evaluate(load_config_file("configs/eval/flores.py:tgt=es,dir=DIR"), "run:runs/x", "out")

The command over it is `python -m pivot_jax.evaluate`; the config schema is `pivot_jax.config.eval_config`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
from typing import Any

import jax
from etils import epath
from flax import nnx
from ml_collections import ConfigDict

from pivot_jax import model as model_lib
from pivot_jax import sharding
from pivot_jax.data import formats
from pivot_jax.decode import Sampling
from pivot_jax.eval import items as items_lib
from pivot_jax.eval import judge as judge_lib
from pivot_jax.eval import metrics
from pivot_jax.eval.chat_client import ChatClient
from pivot_jax.eval.predict import predict, read_predictions
from pivot_jax.paths import PathLike, as_path
from pivot_jax.pretrained import load_params_onto, load_tokenizer, read_config
from pivot_jax.results import Result, append_results

log = logging.getLogger("pivot_jax.evaluate")


def protocol_name(cfg: ConfigDict) -> str:
    if cfg.name:
        return cfg.name
    langs = f"{cfg.source_lang}-{cfg.target_lang}" if cfg.set in ("translation", "cldr") else cfg.target_lang
    return f"{cfg.set}/{langs}/{cfg.prompt_format}/{'greedy' if cfg.greedy else 'sampled'}"


def load_model(spec: str, cfg: ConfigDict, mesh: jax.sharding.Mesh, rules: list) -> tuple[model_lib.Llama, Any]:
    """The model with parameters streamed straight onto the mesh, and its tokenizer."""
    model_cfg = read_config(spec).replace(dtype=cfg.dtype)
    abstract = nnx.eval_shape(lambda: model_lib.create(model_cfg))
    params = load_params_onto(spec, model_cfg, sharding.param_shardings(abstract, mesh, rules))
    nnx.update(abstract, params)
    return abstract, load_tokenizer(spec)


def score(cfg: ConfigDict, items: list[items_lib.Item], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every metric of the set's protocol as {name, value, protocol, samples}; per language (`name/xx`) too when
    the set mixes target languages."""
    languages = sorted({item.language for item in items})
    out = _score_group(cfg, items, records, suffix="")
    if len(languages) > 1:
        for lang in languages:
            chosen = [i for i, item in enumerate(items) if item.language == lang]
            out += _score_group(cfg, [items[i] for i in chosen], [records[i] for i in chosen], suffix=f"/{lang}")
    return out


def _score_group(cfg: ConfigDict, items: list[items_lib.Item], records: list[dict[str, Any]], suffix: str
                 ) -> list[dict[str, Any]]:
    answers = [r["answer"] or "" for r in records]
    protocol = protocol_name(cfg)
    out: list[dict[str, Any]] = []

    def add(values: dict[str, Any], names: dict[str, str]) -> None:
        for key, label in names.items():
            if key in values:
                out.append({"name": label + suffix, "value": float(values[key]), "protocol": protocol,
                            "samples": len(items)})

    if cfg.set in ("translation", "cldr"):
        refs = [item.references[0] for item in items]
        add(metrics.translation_metrics(answers, refs, spm_model=cfg.spm_model or None, tokenize=cfg.spm_tokenize),
            {"bleu": "bleu", "chrf++": "chrf++", "spbleu": "spbleu"})
    elif cfg.set == "qa":
        add(metrics.qa_metrics(answers, [list(item.references) for item in items], cfg.target_lang),
            {"substring_accuracy": "xllama_accuracy", "exact_match": "exact_match", "f1": "f1",
             "exact_match_char": "exact_match_char", "f1_char": "f1_char"})
    elif cfg.set == "math":
        add(metrics.math_accuracy(answers, [item.references[0] for item in items]), {"accuracy": "accuracy"})
    hits = [metrics.language_fidelity([a], item.language)["fidelity"] for a, item in zip(answers, items)]
    add({"fidelity": sum(hits) / max(len(hits), 1)}, {"fidelity": "language_fidelity"})
    if cfg.prompt_format == "plug":
        add(metrics.plug_metrics([r["output"] for r in records], cfg.target_lang),
            {"not_found": "plug_marker_not_found"})
    return out


@dataclasses.dataclass
class JudgeOptions:
    """Judge this run's answers against another run's on the same eval config (`judge.py` protocols)."""

    kind: str  # "pairwise" (PLUG, X-AlpacaEval) or "score" (X-Instruction)
    against: PathLike  # the other run's output directory (or its predictions.jsonl)
    client: ChatClient
    mi_eval_gate: bool = False  # x-LLaMA: an answer in the wrong language loses without asking the judge


def judge_answers(cfg: ConfigDict, items: list[items_lib.Item], records: list[dict[str, Any]],
                  options: JudgeOptions, output: epath.Path) -> list[dict[str, Any]]:
    """Run the judge on (this run, the other run) per item; writes `judge.json`, returns metric records."""
    against = as_path(options.against)
    path = against / "predictions.jsonl" if against.is_dir() else against
    theirs = read_predictions(path)
    missing = [item.id for item in items if item.id not in theirs]
    if missing:
        raise ValueError(f"{path}: no prediction for {len(missing)} item(s) of this eval set, e.g. {missing[:3]} "
                         "(judge runs made with the same eval config)")
    pairs = [(item, (ours["answer"] or ""), (theirs[item.id]["answer"] or "")) for item, ours in zip(items, records)]

    def question(item: items_lib.Item) -> str:
        return formats.user_message(item.instruction, item.input)

    if options.kind == "pairwise":
        result = judge_lib.pairwise_judge(
            options.client, [{"id": i.id, "language": i.language, "dataset": i.dataset or cfg.set,
                              "question": question(i), "answer_a": a, "answer_b": b} for i, a, b in pairs],
            gate=metrics.mi_eval_gate if options.mi_eval_gate else None)
        overall = result["summary"]["overall"]
        values = {f"judge_{o}_pct": overall[o] for o in ("win", "tie", "loss", "error")}
        name = "plug-pairwise" + ("+mi-eval-gate" if options.mi_eval_gate else "")
    elif options.kind == "score":
        result = judge_lib.score_judge(options.client, [{"id": i.id, "language": i.language, "question": question(i),
                                                     "answer_1": a, "answer_2": b} for i, a, b in pairs])
        overall = result["summary"]["overall"]
        values = {"judge_score": overall["mean_1"], "judge_score_other": overall["mean_2"],
                  "judge_errors": overall["errors_1"]}
        name = "xinstruction-score"
    else:
        raise ValueError(f"--judge must be 'pairwise' or 'score', got {options.kind!r}")
    if jax.process_index() == 0:
        (output / "judge.json").write_text(json.dumps({"against": str(path), **result}, indent=2, ensure_ascii=False))
    protocol = f"{protocol_name(cfg)}/{name}/vs:{path.parent.name}"
    return [{"name": key, "value": float(value) if value is not None else float("nan"), "protocol": protocol,
             "samples": len(items)} for key, value in values.items()]


def evaluate(cfg: ConfigDict, model_spec: str, output: PathLike, index: PathLike | None = None,
             tags: dict[str, str] | None = None, judge: JudgeOptions | None = None,
             loaded: tuple[model_lib.Llama, Any, jax.sharding.Mesh, list] | None = None,
             step: int | None = None) -> list[dict[str, Any]]:
    """Generate (resuming what `output` holds), score, and write results; returns the metric records.

    `loaded` = (model, tokenizer, mesh, rules) evaluates a model already in memory (the trainer's at `step`),
    with `model_spec` only naming it in the results.
    """
    output = as_path(output)
    if loaded is None:
        rules = [tuple(rule) for rule in cfg.mesh.axis_rules]
        mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
    else:
        model, tokenizer, mesh, rules = loaded
    items = items_lib.build_items(cfg)
    log.info("%s: %d items from %s", protocol_name(cfg), len(items), cfg.set)
    with sharding.activate(mesh, rules):
        if loaded is None:
            model, tokenizer = load_model(model_spec, cfg, mesh, rules)
        batch_sharding = sharding.batch_sharding(mesh)
        records = predict(
            items, model, tokenizer, output / "predictions.jsonl", prompt_format=cfg.prompt_format,
            max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, pivot=cfg.pivot,
            sampling=Sampling(greedy=cfg.greedy, temperature=cfg.temperature, top_p=cfg.top_p),
            detect_language=metrics.detect_language, place=lambda x: jax.device_put(x, batch_sharding),
            row_multiple=mesh.shape["data"] * mesh.shape["fsdp"])
    results = score(cfg, items, records)
    if judge is not None:
        results += judge_answers(cfg, items, records, judge, output)
    if jax.process_index() == 0:
        write_results(output, cfg, model_spec, results, index, tags or {}, step)
    return results


def write_results(output: epath.Path, cfg: ConfigDict, model_spec: str, results: list[dict[str, Any]],
                  index: PathLike | None, tags: dict[str, str], step: int | None = None) -> None:
    """`results.json` and `results.md` in `output`, and one results-index record per metric (`pivot_jax.results`)."""
    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    summary = {"model": model_spec, "protocol": protocol_name(cfg), "set": cfg.set, "source_lang": cfg.source_lang,
               "target_lang": cfg.target_lang, "time": when, "tags": tags, "metrics": results,
               "config": json.loads(cfg.to_json_best_effort())}
    if step is not None:
        summary["step"] = step
    (output / "results.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    lines = [f"# {protocol_name(cfg)}", "", f"model: `{model_spec}`", "", "| metric | value | samples |",
             "|---|---|---|"]
    lines += [f"| {r['name']} | {r['value']:.4g} | {r['samples']} |" for r in results]
    (output / "results.md").write_text("\n".join(lines) + "\n")
    if index is not None:
        append_results(index, [Result(
            run=model_spec, metric=r["name"], value=r["value"], protocol=r["protocol"], samples=r["samples"],
            step=step, tags=tags, time=when, set=cfg.set, source_lang=cfg.source_lang, target_lang=cfg.target_lang,
            output=str(output)) for r in results])
    print("\n".join(lines[4:]))
    print(f"\nwrote {output / 'results.json'}, {output / 'results.md'}" + (f"; indexed in {index}" if index else ""))
