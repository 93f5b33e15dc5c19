"""Translating an English instruction set (Alpaca-style) into language X, as PLUG built its training data.

  engine = model_engine(load_pretrained("gguf:FILE"), max_new_tokens=2048, batch_size=8)
  #     or endpoint_engine(ChatClient(base_url, model, api_key), max_new_tokens=2048, batch_size=16)
  summary = translate_file("alpaca_en.json", "alpaca_zh.jsonl", "zh", engine)

One request per example: the English instruction and response go together into the language's user prompt
(`PROMPTS`, PLUG's own, with the markers `<|user|>` and `<|assistant|>`), one greedy answer (temperature 0), and
the answer is split back at the markers (`split_answer`). The English instruction sent is the record's
`instruction` plus, when its `input` is not empty, a blank line and the input (`formats.user_message`): PLUG's
code translates the instruction together with its input, so the translated records have no `input` of their own.

English text longer than `max_input_tokens` (2,038, PLUG's limit) is truncated first: by the model's tokenizer
when our model translates, by whitespace-separated words (an approximation of tokens) with an endpoint. The budget
is shared so that neither the instruction nor the response is cut below half of it while the other leaves room.

Files (OUTPUT's `.jsonl` or `.json` suffix replaced; `alpaca_zh.jsonl` -> `alpaca_zh.dropped.jsonl`):
  OUTPUT                      kept examples: id, lang, instruction, output (translated), source_instruction,
                              source_output (the English text sent, truncated when `truncated`), truncated, raw
  OUTPUT.dropped.jsonl        dropped examples: id, reason, raw (when there was an answer), message, truncated
  OUTPUT.summary.json         kept / dropped by reason / truncated, over the files (and this run's share)

Reasons for a drop: `missing_field` (no string `instruction` or `output`), `no_markers` (an answer without both
markers, or with an empty part), `wrong_language` (the split answer is not in X by py3langid, the detector of
the evaluation's language fidelity: a small model often copies the English back; `check_language=False` keeps
such answers), `endpoint_error` (the request failed after the client's retries), `too_long` (the prompt does not
fit the model's context even after truncation). Ids are the record's `id` (as a string), else
its 0-based position in the input file (`"0"`, `"1"`, ...), so PLUG joins English and X by id: give the English
records the same ids. Each example is appended and flushed as soon as its batch is answered; a rerun skips the ids
already in OUTPUT or in the dropped file (`retry_dropped` sends the dropped ones again).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pivot_jax.data.formats import user_message
from pivot_jax.decode import Sampling, generate_ids
from pivot_jax.errors import ConfigError
from pivot_jax.eval.chat_client import ChatClient, JudgeAPIError
from pivot_jax.eval.metrics import detect_language
from pivot_jax.jsonl import Appender, DataError, parse_lines, read_json, read_jsonl, read_text
from pivot_jax.paths import write_text_atomic

log = logging.getLogger("pivot_jax.construct")

USER_MARKER = "<|user|>"
ASSISTANT_MARKER = "<|assistant|>"
# PLUG's per-language user prompts, verbatim (the spec `formats.md`, "PLUG: translating an English instruction
# set into X"); `tests/test_construct_translate.py` pins them against it.
PROMPTS: dict[str, str] = {
    "zh": "将下列英文翻译成中文。保留<|user|>和<|assistant|>这两个特殊字符。\n\n<|user|> {instruction} \n\n"
          "<|assistant|> {response}",
    "ko": "다음 텍스트를 한글로 번역하시오. 두 개의 특수 문자 <|user|> 와 <|assistant|> 를 그대로 두시오.\n\n"
          "<|user|> {instruction} \n\n<|assistant|> {response}",
    "es": "Traduce el siguiente texto al español. Mantén dos tokens especiales <|user|> y <|assistant|> tal como "
          "están.\n\n<|user|> {instruction} \n\n<|assistant|> {response}",
    "it": "Traduci il seguente testo dall'inglese all'italiano. Mantieni le due parole speciali <|user|> e "
          "<|assistant|> così come sono.\n\n<|user|> {instruction} \n\n<|assistant|> {response}",
}
MAX_INPUT_TOKENS = 2038  # PLUG truncates longer English examples first
PROMPT_SLACK_TOKENS = 16  # tokens of the text and of the template do not quite add up: leave a little room

MISSING_FIELD, NO_MARKERS, ENDPOINT_ERROR, TOO_LONG = "missing_field", "no_markers", "endpoint_error", "too_long"
WRONG_LANGUAGE = "wrong_language"


def prompt_template(lang: str) -> str:
    """The user prompt for `lang`, with `{instruction}` and `{response}`; an unknown language is an error."""
    if lang not in PROMPTS:
        raise ConfigError(f"no translation prompt for language {lang!r}; known: {', '.join(sorted(PROMPTS))}")
    return PROMPTS[lang]


def render_prompt(lang: str, instruction: str, response: str) -> str:
    return prompt_template(lang).format(instruction=instruction, response=response)


def split_answer(answer: str) -> tuple[str, str] | None:
    """(translated instruction, translated response): the text between `<|user|>` and the next `<|assistant|>`,
    and the text after that, both stripped; None when a marker is missing or a part is empty. The last
    `<|user|>` counts: an answer that echoes the prompt's first line (which names both markers) still splits."""
    start = answer.rfind(USER_MARKER)
    if start < 0:
        return None
    start += len(USER_MARKER)
    middle = answer.find(ASSISTANT_MARKER, start)
    if middle < 0:
        return None
    instruction, response = answer[start:middle].strip(), answer[middle + len(ASSISTANT_MARKER):].strip()
    return (instruction, response) if instruction and response else None


# ---------------------------------------------------------------------------------------------------------------
# Engines: a function from user prompts to answers, and how they count the English text


@dataclasses.dataclass(frozen=True)
class Failure:
    """An example an engine could not answer: the drop reason and a message (never an API key)."""

    reason: str
    message: str


Answer = str | Failure


@dataclasses.dataclass(frozen=True)
class Engine:
    """What translates: `answer(prompts) -> answers` (one per prompt, in order; a `Failure` for one it could not
    answer), how it counts and cuts English text (`count`, `cut(text, n)`), a prompt's length (`prompt_length`,
    for length bucketing), the longest prompt it takes (None: no limit) and how many prompts go in one call."""

    name: str
    answer: Callable[[list[str]], list[Answer]]
    count: Callable[[str], int]
    cut: Callable[[str, int], str]
    prompt_length: Callable[[str], int]
    max_prompt_length: int | None
    batch_size: int


def _words(text: str) -> int:
    return len(text.split())


def _cut_words(text: str, n: int) -> str:
    """The first `n` whitespace-separated words of `text`, with the whitespace between them as it was."""
    end = 0
    for number, match in enumerate(re.finditer(r"\S+", text), 1):
        if number > n:
            break
        end = match.end()
    return text[:end]


def endpoint_engine(client: ChatClient, *, max_new_tokens: int, batch_size: int) -> Engine:
    """An OpenAI-compatible chat endpoint: each prompt one user message, temperature 0, one answer, sent on the
    client's threads (its cache and retries); a request that still fails is a `Failure(ENDPOINT_ERROR, ...)`."""

    def one(prompt: str) -> Answer:
        try:
            return client.chat([{"role": "user", "content": prompt}], temperature=0.0, max_tokens=max_new_tokens)
        except JudgeAPIError as e:  # the client keeps its key out of messages
            return Failure(ENDPOINT_ERROR, str(e))

    return Engine(f"endpoint {client.base_url} model {client.model}", lambda prompts: client.map(one, prompts),
                  _words, _cut_words, _words, None, batch_size)


def model_engine(pretrained: Any, *, max_new_tokens: int, batch_size: int) -> Engine:
    """Our model (a `pivot_jax.pretrained.Pretrained`): greedy KV-cache decoding in batches (`generate_ids`), each
    prompt one user message in the tokenizer's chat template when it has one (else the plain text after BOS)."""
    tok = pretrained.tokenizer
    if tok is None:
        raise ConfigError(f"{pretrained.source}: no tokenizer was found with these weights; translating needs one")
    chat = tok.chat_template is not None
    stops = set(tok.stop_ids)
    # Decoding skips special tokens: keep them when the markers are special tokens of this vocabulary (a model
    # trained on PLUG's format), else the split would find no marker.
    keep_special = any(len(ids := tok.encode(m)) == 1 and not tok.decode(ids) for m in (USER_MARKER, ASSISTANT_MARKER))

    def encode(prompts: Sequence[str]) -> list[list[int]]:
        return pretrained.encode_prompts(list(prompts), chat=chat)

    def answer(prompts: list[str]) -> list[Answer]:
        rows = generate_ids(pretrained.model, encode(prompts), max_new_tokens=max_new_tokens,
                            sampling=Sampling(greedy=True), stop_ids=sorted(stops), pad_id=tok.pad_id)
        answers: list[Answer] = []
        for row in rows:
            if keep_special:
                while row and row[-1] in stops:
                    row = row[:-1]
            answers.append(tok.decode(row, skip_special_tokens=not keep_special))
        return answers

    def cut(text: str, n: int) -> str:
        return tok.decode(tok.encode(text)[:n]).rstrip("\ufffd")  # a character cut in two bytes

    return Engine(f"model {pretrained.source or type(pretrained).__name__}", answer, lambda text: len(tok.encode(text)),
                  cut, lambda prompt: len(encode([prompt])[0]), pretrained.config.max_seq_len - max_new_tokens,
                  batch_size)


# ---------------------------------------------------------------------------------------------------------------
# Records


@dataclasses.dataclass
class Example:
    id: str
    instruction: str = ""  # the English instruction sent: instruction + "\n\n" + input
    output: str = ""
    truncated: bool = False
    prompt: str = ""


def read_examples(path: str | Path, limit: int | None = None) -> tuple[list[Example], list[str]]:
    """(examples, ids of records without a string `instruction` or `output`) of a JSON-list or JSON-lines file,
    in file order; only its first `limit` records when given. A duplicate id is a `DataError`."""
    text = read_text(path)
    if text.lstrip().startswith("["):
        values = read_json(path)
    else:
        values = [value for _, value in parse_lines(text, path, expected="one JSON object per line or a JSON list")]
    examples, missing, seen = [], [], {}
    for index, record in enumerate(values[:limit] if limit is not None else values):
        record = record if isinstance(record, dict) else {}
        given = record.get("id")
        id_ = str(index) if given is None or isinstance(given, (bool, dict, list)) else str(given)
        if id_ in seen:
            raise DataError(f"{path}: records {seen[id_]} and {index} (0-based) have the same id {id_!r}")
        seen[id_] = index
        instruction, output, input_ = record.get("instruction"), record.get("output"), record.get("input") or ""
        if not (isinstance(instruction, str) and isinstance(output, str) and isinstance(input_, str)):
            missing.append(id_)
        else:
            examples.append(Example(id_, user_message(instruction, input_), output))
    return examples, missing


def sibling(output: str | Path, suffix: str) -> Path:
    """`alpaca_zh.jsonl` -> `alpaca_zh{suffix}`: the dropped and summary files beside the output."""
    output = Path(output)
    stem = output.name[:-len(output.suffix)] if output.suffix in (".jsonl", ".json") else output.name
    return output.with_name(stem + suffix)


def _share_budget(n_instruction: int, n_output: int, budget: int) -> tuple[int, int]:
    """Tokens kept of each side when together they exceed `budget`: neither is cut below half of it while the
    other leaves room."""
    keep_instruction = min(n_instruction, max(budget // 2, budget - n_output))
    return keep_instruction, min(n_output, budget - keep_instruction)


def _truncate(example: Example, engine: Engine, budget: int) -> None:
    n_instruction, n_output = engine.count(example.instruction), engine.count(example.output)
    if n_instruction + n_output <= budget:
        return
    keep_instruction, keep_output = _share_budget(n_instruction, n_output, budget)
    if keep_instruction < n_instruction:
        example.instruction = engine.cut(example.instruction, keep_instruction)
    if keep_output < n_output:
        example.output = engine.cut(example.output, keep_output)
    example.truncated = True


def _done_ids(output: Path, dropped: Path, retry_dropped: bool) -> set[str]:
    done = {str(r.get("id")) for r in read_jsonl(output, torn_tail_ok=True) if isinstance(r, dict)}
    if not retry_dropped:
        done |= {str(r.get("id")) for r in read_jsonl(dropped, torn_tail_ok=True) if isinstance(r, dict)}
    return done


def summarize(output: str | Path, ids: Sequence[str]) -> dict[str, Any]:
    """Kept, dropped by reason and truncated over the output files, for the input's `ids` (a later answer of an
    id replaces an earlier drop)."""
    output = Path(output)
    wanted = set(ids)
    kept = {r["id"]: r for r in read_jsonl(output, torn_tail_ok=True) if isinstance(r, dict) and r.get("id") in wanted}
    dropped = {r["id"]: r for r in read_jsonl(sibling(output, ".dropped.jsonl"), torn_tail_ok=True)
               if isinstance(r, dict) and r.get("id") in wanted and r.get("id") not in kept}
    reasons = collections.Counter(r.get("reason") for r in dropped.values())
    truncated = sum(bool(r.get("truncated")) for r in [*kept.values(), *dropped.values()])
    return {"total": len(wanted), "kept": len(kept), "dropped": sum(reasons.values()), "dropped_by_reason":
            dict(sorted(reasons.items())), "truncated": truncated, "pending": len(wanted) - len(kept) - len(dropped)}


# ---------------------------------------------------------------------------------------------------------------
# The resumable loop


def translate_file(input_path: str | Path, output: str | Path, lang: str, engine: Engine, *,
                   max_input_tokens: int = MAX_INPUT_TOKENS, limit: int | None = None,
                   retry_dropped: bool = False, check_language: bool = True) -> dict[str, Any]:
    """Translate what the output files do not hold yet; returns the summary (also in OUTPUT.summary.json)."""
    template = prompt_template(lang)
    if max_input_tokens < 2:
        raise ConfigError(f"max_input_tokens must be >= 2, got {max_input_tokens}")
    output = Path(output)
    dropped_path, summary_path = sibling(output, ".dropped.jsonl"), sibling(output, ".summary.json")
    examples, missing = read_examples(input_path, limit)
    ids = [e.id for e in examples] + missing
    done = _done_ids(output, dropped_path, retry_dropped)
    budget = max_input_tokens
    if engine.max_prompt_length is not None:
        room = engine.max_prompt_length - engine.prompt_length(template.format(instruction="", response=""))
        budget = min(budget, room - PROMPT_SLACK_TOKENS)
        if budget < 2:
            raise ConfigError(f"{engine.name}: no room for the English text in its context once the prompt and "
                              f"max_new_tokens are counted", hint="lower --max_new_tokens")
    todo = [e for e in examples if e.id not in done]
    lengths = {}
    for example in todo:
        _truncate(example, engine, budget)
        example.prompt = template.format(instruction=example.instruction, response=example.output)
        lengths[example.id] = engine.prompt_length(example.prompt)
    todo.sort(key=lambda e: lengths[e.id])  # length bucketing: little padding in a batch of our model
    if done:
        log.info("resuming: %d of %d examples already in %s or %s", len(done & set(ids)), len(ids), output,
                 dropped_path.name)
    log.info("translating %d examples into %s with %s (%d truncated to %d tokens)", len(todo), lang, engine.name,
             sum(e.truncated for e in todo), budget)
    counts: collections.Counter[str] = collections.Counter()
    start = time.perf_counter()
    with Appender(output) as kept, Appender(dropped_path) as drops:
        for id_ in missing:
            if id_ not in done:
                drops.write({"id": id_, "reason": MISSING_FIELD, "message": "no string 'instruction' and 'output'"})
                counts[MISSING_FIELD] += 1
        drops.flush()
        fits = [e for e in todo if engine.max_prompt_length is None or lengths[e.id] <= engine.max_prompt_length]
        fitting = {e.id for e in fits}
        for example in todo:
            if example.id not in fitting:
                drops.write({"id": example.id, "reason": TOO_LONG, "truncated": example.truncated,
                             "message": f"prompt of {lengths[example.id]} tokens"})
                counts[TOO_LONG] += 1
        drops.flush()
        for first in range(0, len(fits), engine.batch_size):
            batch = fits[first:first + engine.batch_size]
            for example, answer in zip(batch, engine.answer([e.prompt for e in batch]), strict=True):
                reason = _write(example, answer, lang, kept, drops, check_language)
                counts[reason or "kept"] += 1
            kept.flush()
            drops.flush()
            finished, elapsed = first + len(batch), time.perf_counter() - start
            log.info("%d/%d done (%d kept, %d dropped) | %.2f examples/s | ETA %ds", finished, len(fits),
                     counts["kept"], sum(counts.values()) - counts["kept"], finished / elapsed,
                     elapsed / finished * (len(fits) - finished))
    summary = {"lang": lang, "input": str(input_path), "output": str(output), **summarize(output, ids),
               "this_run": {"kept": counts.pop("kept", 0), "dropped_by_reason": dict(sorted(counts.items()))}}
    write_text_atomic(summary_path, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary


def _write(example: Example, answer: Answer, lang: str, kept: Appender, drops: Appender,
           check_language: bool) -> str | None:
    """Append the example's record to the output or the dropped file; the drop reason, or None when kept."""
    if isinstance(answer, Failure):
        drops.write({"id": example.id, "reason": answer.reason, "message": answer.message,
                     "truncated": example.truncated})
        return answer.reason
    parts = split_answer(answer)
    if parts is None:
        drops.write({"id": example.id, "reason": NO_MARKERS, "raw": answer, "truncated": example.truncated})
        return NO_MARKERS
    if check_language and (found := detect_language(f"{parts[0]}\n{parts[1]}")) != lang:
        drops.write({"id": example.id, "reason": WRONG_LANGUAGE, "raw": answer, "truncated": example.truncated,
                     "message": f"answer detected as {found!r}, not {lang!r}"})
        return WRONG_LANGUAGE
    kept.write({"id": example.id, "lang": lang, "instruction": parts[0], "output": parts[1],
                "source_instruction": example.instruction, "source_output": example.output,
                "truncated": example.truncated, "raw": answer})
    return None
