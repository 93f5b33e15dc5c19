"""LLM judges over an OpenAI-compatible chat API: PLUG's pairwise X-AlpacaEval judge and X-Instruction's score judge.

The prompts are the papers' published ones (`shared/specs/formats.md`) and must stay byte-identical to them: the tests
pin them. `ChatClient` adds what a paid judge needs: retries, client-side rate limiting, an on-disk response cache (a
re-run sends nothing), usage and cost accounting, and a small thread pool. The API key only ever goes into the
`Authorization` header: it is kept out of reprs, logs, the cache and exception messages.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import email.utils
import hashlib
import http.client
import json
import logging
import math
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

from pivot_jax.data.formats import language_name
from pivot_jax.errors import PivotError

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_R = TypeVar("_R")

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_CACHE_DIR = "~/.cache/pivot_jax/judge"
ENDPOINT = "/chat/completions"
DEFAULT_MAX_TOKENS = 2048  # FastChat's judge setting, which PLUG's X-AlpacaEval judge follows

# ---------------------------------------------------------------------------------------------------------------
# Chat-completions client


class JudgeAPIError(PivotError, RuntimeError):
    """The chat API failed: a non-retryable status, a redirect, a malformed response, or retries exhausted.

    A PivotError: what fixes it is mostly the user's (the base URL, the key, the service named).
    """

    def __init__(self, message: str, status: int | None, url: str, hint: str = ""):
        super().__init__(message, hint)
        self.status = status  # None for connection errors and malformed cached or choice-less responses
        self.url = url


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Leaves every 3xx to `ChatClient._post` as an HTTPError: urllib would follow it with the `Authorization`
    header to whatever host it names, and turn the POST into a GET whose answer it takes as the reply."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Mapping[str, str], newurl: str) -> None:
        return None


class _Secret:
    """The API key, wrapped so that no repr or formatting of the client (or its `vars`) can show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def __repr__(self) -> str:
        return "<redacted>"

    __str__ = __repr__

    def reveal(self) -> str:
        return self._value


@dataclasses.dataclass
class Usage:
    """What a client (or one judge run) consumed."""

    requests: int = 0  # HTTP requests sent, failed and retried attempts included
    cache_hits: int = 0  # answered from the cache, no request sent
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0  # estimated from the client's per-1K-token prices

    def __sub__(self, other: Usage) -> Usage:
        return Usage(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in dataclasses.fields(self)})

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class RateLimiter:
    """Spaces request starts at least 60 / `requests_per_minute` seconds apart, across threads."""

    def __init__(self, requests_per_minute: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if requests_per_minute <= 0:
            raise ValueError(f"requests_per_minute must be > 0, got {requests_per_minute}")
        self._interval = 60.0 / requests_per_minute
        self._clock = clock
        self._sleep = sleep
        self._next = -math.inf
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Block until this caller may send its request."""
        with self._lock:  # reserve a slot under the lock, wait for it outside so other threads can queue up behind
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            self._sleep(start - now)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait (`retry-after-ms`, as OpenAI sends, or `Retry-After`), if it said."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class ChatClient:
    """OpenAI-compatible chat-completions client: POST `{base_url}/chat/completions`.

    `base_url`, `model` and `api_key` default to `$PIVOT_JUDGE_BASE_URL` (else the OpenAI API), `$PIVOT_JUDGE_MODEL`
    and `$PIVOT_JUDGE_API_KEY` (else `$OPENAI_API_KEY`; no key sends no `Authorization`, for local servers).
    Requests that fail with 429, 5xx or a connection error are retried `max_retries` times, waiting what the server's
    `Retry-After` asks or else `backoff * 2**attempt` seconds (at most `max_backoff`). Responses are cached under
    `cache_dir` (default `$PIVOT_JUDGE_CACHE_DIR`, else ~/.cache/pivot_jax/judge), keyed by a hash of the request
    (endpoint path, model, messages, temperature, max_tokens and any other parameters; never the key).
    Redirects are not followed (the key goes only to `base_url`'s host) and, like a non-JSON answer, fail at once.
    """

    def __init__(self, base_url: str | None = None, model: str | None = None, api_key: str | None = None, *,
                 cache_dir: str | os.PathLike[str] | None = None, use_cache: bool = True, max_retries: int = 5,
                 backoff: float = 1.0, max_backoff: float = 60.0, timeout: float = 120.0,
                 requests_per_minute: float | None = None, max_workers: int = 4,
                 prompt_price_per_1k: float = 0.0, completion_price_per_1k: float = 0.0,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        self.base_url = (base_url or os.environ.get("PIVOT_JUDGE_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.url = self.base_url + ENDPOINT
        model = model or os.environ.get("PIVOT_JUDGE_MODEL")
        if not model:
            raise ValueError("no judge model: pass model= or set PIVOT_JUDGE_MODEL")
        self.model = model
        key = api_key or os.environ.get("PIVOT_JUDGE_API_KEY") or os.environ.get("OPENAI_API_KEY")
        if key is not None:
            key = key.strip()  # keys read from files often end in a newline
            # http.client would echo an invalid header value, key included, in its exception.
            if not (key.isascii() and key.isprintable() and " " not in key):
                raise ValueError("the API key contains whitespace, control or non-ASCII characters")
        self._api_key = _Secret(key) if key else None
        self.cache_dir = (Path(cache_dir or os.environ.get("PIVOT_JUDGE_CACHE_DIR") or DEFAULT_CACHE_DIR).expanduser()
                          if use_cache else None)
        if max_retries < 0 or max_workers < 1:
            raise ValueError(f"need max_retries >= 0 and max_workers >= 1, got {max_retries}, {max_workers}")
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.max_workers = max_workers
        self.prompt_price_per_1k = prompt_price_per_1k
        self.completion_price_per_1k = completion_price_per_1k
        self._sleep = sleep
        self._limiter = RateLimiter(requests_per_minute, clock, sleep) if requests_per_minute else None
        self._opener = urllib.request.build_opener(_NoRedirects())
        self._usage = Usage()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ChatClient(base_url={self.base_url!r}, model={self.model!r}, cache_dir={self.cache_dir!r})"

    @property
    def usage(self) -> Usage:
        """A snapshot of everything this client has consumed so far."""
        with self._lock:
            return dataclasses.replace(self._usage)

    def chat(self, messages: Sequence[Mapping[str, str]], *, temperature: float = 0.0,
             max_tokens: int = DEFAULT_MAX_TOKENS, **params: Any) -> str:
        """The assistant's reply to `messages`; from the cache, without a request, when this exact one was made."""
        payload = {"model": self.model, "messages": [dict(m) for m in messages], "temperature": temperature,
                   "max_tokens": max_tokens, **params}
        path = self._cache_path(payload)
        if path is not None:
            cached = self._cache_read(path)
            if cached is not None:
                with self._lock:
                    self._usage.cache_hits += 1
                return cached
        response = self._post(payload)
        content = self._content(response)
        usage = response.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        with self._lock:
            self._usage.prompt_tokens += prompt_tokens
            self._usage.completion_tokens += completion_tokens
            self._usage.cost += (prompt_tokens * self.prompt_price_per_1k
                                 + completion_tokens * self.completion_price_per_1k) / 1000.0
        if path is not None:
            self._cache_write(path, {"request": payload, "response": response})
        return content

    def map(self, fn: Callable[[_T], _R], items: Iterable[_T]) -> list[_R]:
        """`[fn(x) for x in items]` on up to `max_workers` threads, in order; a failure cancels what has not started."""
        items = list(items)
        if self.max_workers == 1 or len(items) <= 1:
            return [fn(x) for x in items]
        with concurrent.futures.ThreadPoolExecutor(self.max_workers, thread_name_prefix="judge") as pool:
            futures = [pool.submit(fn, x) for x in items]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    # -- HTTP -------------------------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        """`text` without the key: some servers echo the Authorization header back in their error bodies."""
        return text.replace(self._api_key.reveal(), "<redacted>") if self._api_key else text

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key.reveal()}"
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            if self._limiter is not None:
                self._limiter.acquire()
            with self._lock:
                self._usage.requests += 1
            log.debug("POST %s model=%s (attempt %d/%d)", self.url, self.model, attempt + 1, attempts)
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with self._opener.open(request, timeout=self.timeout) as response:
                    body = response.read()
                return self._decode(body, response.status, response.headers.get("Content-Type"))
            except urllib.error.HTTPError as exc:
                status, wait = exc.code, _retry_after(exc.headers)
                if 300 <= status < 400:
                    raise self._redirected(exc) from None
                try:
                    detail = exc.read().decode("utf-8", "replace")
                except (OSError, http.client.HTTPException):
                    detail = ""
                failure = f"HTTP {status} {exc.reason}" + (f": {self._redact(detail)[:300]}" if detail else "")
                if status != 429 and status < 500:
                    raise JudgeAPIError(f"chat completion at {self.url} failed with {failure}", status, self.url) \
                        from None
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                status, wait = None, None
                failure = f"connection error ({type(reason).__name__}: {self._redact(str(reason))})"
            if attempt + 1 < attempts:
                delay = wait if wait is not None else min(self.max_backoff, self.backoff * 2 ** attempt)
                log.warning("%s from %s; retry %d/%d in %.1f s", failure, self.url, attempt + 1, self.max_retries,
                            delay)
                self._sleep(delay)
        raise JudgeAPIError(f"chat completion at {self.url} failed after {attempts} attempts; last: {failure}",
                            status, self.url)

    def _redirected(self, exc: urllib.error.HTTPError) -> JudgeAPIError:
        location = exc.headers.get("Location")
        target = f" to {self._redact(urllib.parse.urljoin(self.url, location))}" if location else ""
        return JudgeAPIError(
            f"chat completion at {self.url} answered HTTP {exc.code} {exc.reason}, a redirect{target}; redirects are "
            "not followed, so that the API key goes only to the configured host", exc.code, self.url,
            hint="set --judge_base_url (or PIVOT_JUDGE_BASE_URL) to the address the API is served at")

    def _decode(self, body: bytes, status: int, content_type: str | None) -> dict[str, Any]:
        try:
            response = json.loads(body)
        except ValueError:
            response = None
        if not isinstance(response, dict):
            shown = self._redact(body[:300].decode("utf-8", "replace")) or "(empty)"
            raise JudgeAPIError(f"chat completion at {self.url} answered HTTP {status} "
                                f"({content_type or 'no Content-Type'}) with a non-JSON-object body: {shown}",
                                status, self.url, hint="--judge_base_url should name an OpenAI-compatible API "
                                                       "(e.g. https://api.openai.com/v1)")
        self._content(response)  # validate before it reaches the cache
        return response

    def _content(self, response: Mapping[str, Any]) -> str:
        try:
            content = response["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise JudgeAPIError(f"chat completion at {self.url} returned no choices[0].message: "
                                f"{self._redact(json.dumps(response)[:300])}", None, self.url) from None
        return content or ""  # null content (e.g. a refusal) reads as an unparsable verdict

    # -- cache ------------------------------------------------------------------------------------------------

    def _cache_path(self, payload: Mapping[str, Any]) -> Path | None:
        if self.cache_dir is None:
            return None
        request = {"path": urllib.parse.urlsplit(self.url).path, "payload": payload}
        digest = hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
                                .encode("utf-8")).hexdigest()
        return self.cache_dir / digest[:2] / f"{digest}.json"

    def _cache_read(self, path: Path) -> str | None:
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            return self._content(entry["response"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, JudgeAPIError) as exc:
            log.warning("ignoring unreadable judge cache entry %s (%s)", path, type(exc).__name__)
            return None

    def _cache_write(self, path: Path, entry: Mapping[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Atomic replace: concurrent writers of one key, or a killed run, never leave a half-written entry.
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(entry, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------------
# Shared helpers


def _require(items: Sequence[Mapping[str, Any]], fields: Sequence[str], kind: str) -> None:
    """Check every item before the first (paid) request rather than failing halfway through."""
    for index, item in enumerate(items):
        missing = [f for f in fields if f not in item]
        if missing:
            raise ValueError(f"{kind} item {index} lacks {', '.join(missing)}; each needs {', '.join(fields)}")


def _grouped(records: Sequence[Mapping[str, Any]], key: str,
             summarize: Callable[[Sequence[Mapping[str, Any]]], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[Mapping[str, Any]]] = collections.defaultdict(list)
    for record in records:
        groups[record[key]].append(record)
    return {name: summarize(group) for name, group in sorted(groups.items())}


# ---------------------------------------------------------------------------------------------------------------
# PLUG: pairwise judge with position swap

PLUG_JUDGE_SYSTEM_PROMPT = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to the "
    "user question displayed below. You should choose the assistant that follows the user's instructions and answers "
    "the user's question better. Your evaluation should consider factors such as the helpfulness, relevance, "
    "accuracy, depth, creativity, and level of detail of their responses. Pay special attention to whether the "
    "assistant's response contains any unnatural language use, sentences that are not fluent, or grammatical "
    "problems, especially when answering in languages other than English. Begin your evaluation by comparing the two "
    "responses and provide a short explanation. Avoid any position biases and ensure that the order in which the "
    "responses were presented does not influence your decision. Do not allow the length of the responses to "
    "influence your evaluation. Do not favor certain names of the assistants. Be as objective as possible. After "
    "providing your explanation, output your final verdict by strictly following this format: \"[[A]]\" if "
    "assistant A is better, \"[[B]]\" if assistant B is better, and \"[[C]]\" for a tie."
)
PLUG_JUDGE_USER_PROMPT = (
    "[User Question]\n{question}\n\n"
    "[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]\n\n"
    "[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]"
)
PAIRWISE_FIELDS = ("id", "language", "dataset", "question", "answer_a", "answer_b")
OUTCOMES = ("win", "tie", "loss", "error")  # model A's outcome

_VERDICT = re.compile(r"\[\[([ABC])\]\]")
_VERDICT_OUTCOME = {"A": "win", "B": "loss", "C": "tie"}
_SWAPPED = {"A": "B", "B": "A", "C": "C"}


def pairwise_messages(question: str, answer_a: str, answer_b: str) -> list[dict[str, str]]:
    """The PLUG judge's chat: system prompt, then the question with the two answers shown as A and B."""
    user = PLUG_JUDGE_USER_PROMPT.format(question=question, answer_a=answer_a, answer_b=answer_b)
    return [{"role": "system", "content": PLUG_JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_verdict(text: str) -> str | None:
    """"A", "B" or "C" from the last `[[A]]`/`[[B]]`/`[[C]]` in the judgement; None (unparsable) when there is none."""
    tags = _VERDICT.findall(text)
    return tags[-1] if tags else None


def plug_outcome(verdict: str | None, swapped_verdict: str | None) -> str:
    """Model A's outcome ("win", "tie", "loss" or "error") from its two verdicts, both in model labels.

    `swapped_verdict` is the second judgement mapped back (model B was shown as A). PLUG's rules: both agree -> that;
    different winners -> tie; one tie and one win -> the win; both ties -> tie; an unparsable verdict -> error.
    """
    if verdict is None or swapped_verdict is None:
        return "error"
    if verdict == swapped_verdict:
        return _VERDICT_OUTCOME[verdict]
    if "C" in (verdict, swapped_verdict):
        return _VERDICT_OUTCOME[swapped_verdict if verdict == "C" else verdict]
    return "tie"


def _outcome_percentages(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    counts = collections.Counter(r["outcome"] for r in records)
    n = len(records)
    return {"n": n, **{o: 100.0 * counts[o] / n if n else 0.0 for o in OUTCOMES},
            "counts": {o: counts[o] for o in OUTCOMES}}


def pairwise_judge(client: ChatClient, items: Sequence[Mapping[str, Any]], *,
                   gate: Callable[[str, str, str], str | None] | None = None,
                   max_tokens: int = DEFAULT_MAX_TOKENS) -> dict[str, Any]:
    """PLUG's X-AlpacaEval judgement of model A (`answer_a`) against model B (`answer_b`), at temperature 0.

    Each item (`id`, `language`, `dataset`, `question`, `answer_a`, `answer_b`) is judged in both orders and the two
    verdicts are tallied by `plug_outcome`. `gate(answer_a, answer_b, language)` (x-LLaMA's MI-Eval language-ID gate)
    may return "A" or "B" to decide an item without the judge, e.g. when the other answer is in the wrong language.
    API failures that outlast the retries raise `JudgeAPIError`; what was answered is cached, so a re-run resumes.

    Returns {"records": [...], "summary": {...}, "usage": {...}}. A record holds `id`, `language`, `dataset`, `gate`
    (the gate's winner or None), `judgement_ab`/`judgement_ba` (the judge's texts with A/B shown in order and
    swapped), `verdict_ab`/`verdict_ba` (their tags as written, None when unparsable) and `outcome` for model A. The
    summary gives win/tie/loss/error percentages of all items (with `n` and `counts`) overall, per language and per
    dataset, and how many items the gate decided; `usage` is what this call consumed.
    """
    _require(items, PAIRWISE_FIELDS, "pairwise")
    start = client.usage
    gated = [gate(item["answer_a"], item["answer_b"], item["language"]) if gate else None for item in items]
    for item, winner in zip(items, gated):
        if winner not in ("A", "B", None):
            raise ValueError(f"the gate returned {winner!r} for item {item['id']!r}; expected 'A', 'B' or None")
    chats = []
    for item, winner in zip(items, gated):
        if winner is None:
            chats.append(pairwise_messages(item["question"], item["answer_a"], item["answer_b"]))
            chats.append(pairwise_messages(item["question"], item["answer_b"], item["answer_a"]))
    judgements = iter(client.map(lambda messages: client.chat(messages, temperature=0.0, max_tokens=max_tokens),
                                 chats))
    records = []
    for item, winner in zip(items, gated):
        record = {"id": item["id"], "language": item["language"], "dataset": item["dataset"], "gate": winner,
                  "judgement_ab": None, "judgement_ba": None, "verdict_ab": None, "verdict_ba": None}
        if winner is not None:
            record["outcome"] = _VERDICT_OUTCOME[winner]
        else:
            record["judgement_ab"], record["judgement_ba"] = next(judgements), next(judgements)
            record["verdict_ab"] = parse_verdict(record["judgement_ab"])
            record["verdict_ba"] = parse_verdict(record["judgement_ba"])
            record["outcome"] = plug_outcome(record["verdict_ab"], _SWAPPED.get(record["verdict_ba"]))
        records.append(record)
    summary = {"overall": _outcome_percentages(records),
               "per_language": _grouped(records, "language", _outcome_percentages),
               "per_dataset": _grouped(records, "dataset", _outcome_percentages),
               "gated": sum(winner is not None for winner in gated)}
    usage = client.usage - start
    overall = summary["overall"]
    log.info("pairwise judge: %d items, win %.1f%% tie %.1f%% loss %.1f%% error %.1f%%; %d requests, %d cache hits, "
             "estimated cost %.4f", len(records), overall["win"], overall["tie"], overall["loss"], overall["error"],
             usage.requests, usage.cache_hits, usage.cost)
    return {"records": records, "summary": summary, "usage": usage.as_dict()}


# ---------------------------------------------------------------------------------------------------------------
# X-Instruction: 0-10 scores in both orders

XINSTRUCTION_JUDGE_PROMPT = (
    "Given the question and the answer in {lang} language. You are a helpful and precise assistant for checking the "
    "quality of the answer in {lang}.\n\n<question>\n{instruction}\n</question>\n<answer1>\n{output1}\n</answer1>\n"
    "<answer2>\n{output2}\n</answer2>\n\nSuppose the user only speaks the language of the question, please evaluate "
    "both answers with your justification, and only provide a score ranging from 0 to 10 after your justifications, "
    "the score must be an integer. When evaluating the answers, you should consider the helpfulness, relevance, "
    "accuracy, level of details of the answers. The score for answer 1 should be wrapped by <score1> and </score1>, "
    "and the score for answer 2 should be wrapped by <score2> and </score2>.\n\nPlease only output the scores for "
    "the answers, and do not output the justification and any other information."
)
SCORE_FIELDS = ("question", "answer_1", "answer_2", "language")
INVALID_SCORE = -1

_SCORE_TAGS = (re.compile(r"<score1>(.*?)</score1>", re.S), re.compile(r"<score2>(.*?)</score2>", re.S))


def score_messages(question: str, output1: str, output2: str, language: str) -> list[dict[str, str]]:
    """The X-Instruction judge's chat: one user message, `{lang}` filled with the language's English name."""
    prompt = XINSTRUCTION_JUDGE_PROMPT.format(lang=language_name(language), instruction=question, output1=output1,
                                              output2=output2)
    return [{"role": "user", "content": prompt}]


def parse_scores(text: str) -> tuple[int, int]:
    """(score1, score2) from the last `<score1>`/`<score2>` tags: integers 0-10; -1 when missing, not an integer
    or out of range."""
    scores = []
    for tag in _SCORE_TAGS:
        found = tag.findall(text)
        value = found[-1].strip() if found else ""
        scores.append(int(value) if re.fullmatch(r"\d{1,2}", value) and int(value) <= 10 else INVALID_SCORE)
    return scores[0], scores[1]


def _mean_score(first: int, second: int) -> float | None:
    return (first + second) / 2.0 if first != INVALID_SCORE and second != INVALID_SCORE else None


def _score_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {"n": len(records)}
    for model in ("1", "2"):
        valid = [r[f"score_{model}"] for r in records if r[f"score_{model}"] is not None]
        summary[f"mean_{model}"] = sum(valid) / len(valid) if valid else None
        summary[f"errors_{model}"] = len(records) - len(valid)
    summary["parse_failures"] = sum(r["parse_failures"] for r in records)
    return summary


def score_judge(client: ChatClient, items: Sequence[Mapping[str, Any]], *,
                max_tokens: int = DEFAULT_MAX_TOKENS) -> dict[str, Any]:
    """X-Instruction's judgement: 0-10 scores for `answer_1` and `answer_2`, each order once, at temperature 0.

    Items need `question`, `answer_1`, `answer_2` and `language` (an ISO or FLORES code); `id` is kept when present.
    A model's item score is the mean of its two scores when both parsed; otherwise it is None and counts as an error
    for that model, never as a zero. Returns {"records": [...], "summary": {...}, "usage": {...}}: a record holds
    `id`, `language`, the judge's texts (`judgement_12`: answer 1 shown first; `judgement_21`: swapped), the parsed
    `scores_12`/`scores_21` as [score1, score2] as written (-1 = unparsable), `score_1`, `score_2` and
    `parse_failures`; the summary gives `n`, `mean_1`, `mean_2` (over each model's valid items), `errors_1`,
    `errors_2` and `parse_failures` (unparsable scores) overall and per language.
    """
    _require(items, SCORE_FIELDS, "score")
    start = client.usage
    chats = []
    for item in items:
        chats.append(score_messages(item["question"], item["answer_1"], item["answer_2"], item["language"]))
        chats.append(score_messages(item["question"], item["answer_2"], item["answer_1"], item["language"]))
    judgements = iter(client.map(lambda messages: client.chat(messages, temperature=0.0, max_tokens=max_tokens),
                                 chats))
    records = []
    for index, item in enumerate(items):
        forward, backward = next(judgements), next(judgements)
        scores_12, scores_21 = parse_scores(forward), parse_scores(backward)
        records.append({
            "id": item.get("id", index), "language": item["language"],
            "judgement_12": forward, "judgement_21": backward,
            "scores_12": list(scores_12), "scores_21": list(scores_21),
            "score_1": _mean_score(scores_12[0], scores_21[1]), "score_2": _mean_score(scores_12[1], scores_21[0]),
            "parse_failures": (scores_12 + scores_21).count(INVALID_SCORE),
        })
    summary = {"overall": _score_summary(records), "per_language": _grouped(records, "language", _score_summary)}
    usage = client.usage - start
    overall = summary["overall"]
    log.info("score judge: %d items, mean %s vs %s, %d parse failures; %d requests, %d cache hits, estimated cost "
             "%.4f", len(records), overall["mean_1"], overall["mean_2"], overall["parse_failures"], usage.requests,
             usage.cache_hits, usage.cost)
    return {"records": records, "summary": summary, "usage": usage.as_dict()}
