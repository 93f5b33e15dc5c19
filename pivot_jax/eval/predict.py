"""Batched, length-bucketed, resumable generation over an evaluation set, written as JSONL predictions.

Each finished batch is appended to `predictions.jsonl` (id, prompt, raw output, extracted answer, detected
language) and flushed, so an interrupted run resumes where it stopped and a finished run can be re-scored
without generating again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax

from pivot_jax.eval.items import Item, extract_answer, render_prompt
from pivot_jax.generate import Sampling, generate_ids

log = logging.getLogger("pivot_jax.evaluate")


def read_predictions(path: Path) -> dict[str, dict[str, Any]]:
    """Predictions already written, by id (a line cut short by a crash is ignored and regenerated)."""
    done: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        done[record["id"]] = record
    return done


def predict(items: Sequence[Item], model: Any, tokenizer: Any, path: Path, *, prompt_format: str,
            max_new_tokens: int, batch_size: int, sampling: Sampling = Sampling(), pivot: str = "en",
            detect_language: Callable[[str], str] | None = None, place: Callable | None = None,
            row_multiple: int = 1) -> list[dict[str, Any]]:
    """Generate what `path` does not hold yet; returns every item's prediction record, in item order.

    Prompts are sorted by token length before batching (length bucketing keeps padding small); `place`
    puts each batch's token arrays on the mesh (data parallel) when given. Every process generates; only
    process 0 writes.
    """
    done = read_predictions(path)
    _drop_torn_tail(path)
    todo = [item for item in items if item.id not in done]
    prompts = {item.id: render_prompt(item, prompt_format, tokenizer, pivot) for item in todo}
    add_bos = tokenizer.add_bos_token and prompt_format != "chat"  # chat templates write their own BOS
    ids = {item.id: tokenizer.encode(prompts[item.id], add_bos=add_bos) for item in todo}
    todo.sort(key=lambda item: len(ids[item.id]))
    if done:
        log.info("resuming: %d of %d predictions already in %s", len(done), len(items), path)
    path.parent.mkdir(parents=True, exist_ok=True)
    start, generated = time.perf_counter(), 0
    writer = jax.process_index() == 0
    with open(path, "a", encoding="utf-8") if writer else _NoFile() as out:
        for first in range(0, len(todo), batch_size):
            batch = todo[first:first + batch_size]
            new_ids = generate_ids(model, [ids[item.id] for item in batch], max_new_tokens=max_new_tokens,
                                   sampling=sampling, stop_ids=sorted(tokenizer.stop_ids), pad_id=tokenizer.pad_id,
                                   place=place, row_multiple=row_multiple)
            for item, row in zip(batch, new_ids):
                output = tokenizer.decode(row)
                answer = extract_answer(output, prompt_format, item.language)
                record = {"id": item.id, "prompt": prompts[item.id], "output": output, "answer": answer,
                          "language": detect_language(answer) if detect_language and answer else None,
                          "new_tokens": len(row)}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                done[item.id] = record
                generated += len(row)
            out.flush()
            finished = first + len(batch)
            elapsed = time.perf_counter() - start
            eta = elapsed / finished * (len(todo) - finished)
            if writer:
                log.info("generated %d/%d | %.1f new tok/s | ETA %ds", finished, len(todo), generated / elapsed,
                         eta)
    return [done[item.id] for item in items]


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line that a crash left without its newline, so appended records start on their own line."""
    if not path.exists() or jax.process_index() != 0:
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


class _NoFile:
    """Where processes other than 0 'write' their (identical) predictions."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass
