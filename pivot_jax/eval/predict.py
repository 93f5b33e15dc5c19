"""Batched, length-bucketed, resumable generation over an evaluation set, written as JSONL predictions.

Each finished batch is appended to `predictions.jsonl` (id, prompt, raw output, extracted answer, detected
language) and flushed, so an interrupted run resumes where it stopped and a finished run can be re-scored
without generating again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax

from pivot_jax.decode import Sampling, generate_ids
from pivot_jax.eval.items import Item, extract_answer, render_prompt
from pivot_jax.jsonl import Appender, DataError, read_numbered, type_name

log = logging.getLogger("pivot_jax.evaluate")


def read_predictions(path: Path) -> dict[str, dict[str, Any]]:
    """Predictions already written, by id (a last line cut short by a crash is ignored and regenerated)."""
    done: dict[str, dict[str, Any]] = {}
    for number, record in read_numbered(path, torn_tail_ok=True):
        where = f"{path}: line {number}"
        if not isinstance(record, dict) or not isinstance(record.get("id"), str):
            raise DataError(f"{where}: expected a JSON object with a string 'id' (a prediction record)")
        if "answer" not in record:
            raise DataError(f"{where}: missing field 'answer' (a string, or null when none was extracted)")
        if not isinstance(record["answer"], (str, type(None))):
            raise DataError(f"{where}: field 'answer' should be a string or null, got {type_name(record['answer'])}")
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
    todo = [item for item in items if item.id not in done]
    prompts = {item.id: render_prompt(item, prompt_format, tokenizer, pivot) for item in todo}
    add_bos = tokenizer.add_bos_token and prompt_format != "chat"  # chat templates write their own BOS
    ids = {item.id: tokenizer.encode(prompts[item.id], add_bos=add_bos) for item in todo}
    todo.sort(key=lambda item: len(ids[item.id]))
    if done:
        log.info("resuming: %d of %d predictions already in %s", len(done), len(items), path)
    start, generated = time.perf_counter(), 0
    writer = jax.process_index() == 0
    with Appender(path) if writer else _NoFile() as out:
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
                out.write(record)
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


class _NoFile:
    """Where processes other than 0 'write' their (identical) predictions."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, record: dict[str, Any]) -> None:
        pass

    def flush(self) -> None:
        pass
