"""An OpenAI-compatible chat-completions client, what a paid LLM judge (`pivot_jax.eval.judge`) talks to.

`ChatClient` POSTs `{base_url}/chat/completions` and adds what a paid judge needs: retries, client-side rate limiting,
an on-disk response cache (a re-run sends nothing), usage and cost accounting, and a small thread pool. The API key
only ever goes into the `Authorization` header: it is kept out of reprs, logs, the cache and exception messages.
Redirects are never followed.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import email.utils
import hashlib
import http.client
import json
import logging
import math
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

from pivot_jax.errors import PivotError

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_R = TypeVar("_R")

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_CACHE_DIR = "~/.cache/pivot_jax/judge"
ENDPOINT = "/chat/completions"
DEFAULT_MAX_TOKENS = 2048  # FastChat's judge setting, which PLUG's X-AlpacaEval judge follows


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
