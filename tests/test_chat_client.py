"""The chat-completions client against a real local OpenAI-compatible HTTP server: retries, redirects, cache,
usage, rate limiting, configuration and key hygiene. `FakeChatServer` and `serving` serve `test_judge.py` too."""

from __future__ import annotations

import contextlib
import email.utils
import http.server
import json
import logging
import re
import socket
import threading
import time
import traceback
from collections.abc import Iterator

import pytest

from pivot_jax.errors import PivotError
from pivot_jax.eval import chat_client as C

API_KEY = "sk-test-9f8e7d6c5b4a-SECRET"
MODEL = "judge-model"
HI = [{"role": "user", "content": "hi"}]

# ---------------------------------------------------------------------------------------------------------------
# A local chat-completions server


class FakeChatServer:
    """State of the local server: what it received, failures to serve first, and how it replies.

    It answers `echo: <the last message's content>`; `test_judge.py` subclasses it to answer as a judge would.
    """

    def __init__(self):
        self.requests: list[dict] = []
        self.failures: list[tuple[int, dict, str]] = []  # (status, headers, body); "{auth}" echoes the header
        self.lock = threading.Lock()
        self.base_url = ""

    def reply(self, messages: list[dict]) -> str:
        return f"echo: {messages[-1]['content']}"


class ChatHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        fake: FakeChatServer = self.server.fake
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with fake.lock:
            fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                  "time": time.monotonic()})
            failure = fake.failures.pop(0) if fake.failures else None
        if failure is not None:
            status, headers, text = failure
            self._send(status, headers, text.replace("{auth}", self.headers.get("Authorization", "")))
        elif self.path != "/v1/chat/completions":
            self._send(404, {}, "not found")
        else:
            response = {"id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": fake.reply(body["messages"])}}],
                        "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}}
            self._send(200, {"Content-Type": "application/json"}, json.dumps(response))

    def _send(self, status: int, headers: dict, text: str):
        data = text.encode("utf-8")
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(fake: FakeChatServer, host: str = "127.0.0.1", handler: type = ChatHandler) -> Iterator[FakeChatServer]:
    """`fake` served by `handler` on `host` (a free port) in a thread, for the duration of the block."""
    httpd = http.server.ThreadingHTTPServer((host, 0), handler)
    httpd.fake = fake
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    fake.base_url = f"http://{host}:{httpd.server_address[1]}/v1"
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def clear_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No judge settings from the environment, and no proxy between the client and the local server."""
    for name in ("PIVOT_JUDGE_BASE_URL", "PIVOT_JUDGE_MODEL", "PIVOT_JUDGE_API_KEY", "OPENAI_API_KEY",
                 "PIVOT_JUDGE_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    clear_env(monkeypatch)


@pytest.fixture
def server():
    with serving(FakeChatServer()) as fake:
        yield fake


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_client(server, tmp_path, sleeps):
    def make(**kwargs) -> C.ChatClient:
        kwargs = {"base_url": server.base_url, "model": MODEL, "api_key": API_KEY, "cache_dir": tmp_path / "cache",
                  "sleep": sleeps.append, **kwargs}
        return C.ChatClient(**kwargs)
    return make


def user(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


# ---------------------------------------------------------------------------------------------------------------
# Requests


def test_request_body_and_headers(server, make_client):
    client = make_client()
    assert client.chat(HI) == "echo: hi"
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["body"] == {"model": MODEL, "messages": HI, "temperature": 0.0, "max_tokens": 2048}
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["Authorization"] == f"Bearer {API_KEY}"
    client.chat(HI, temperature=0.7, max_tokens=16, top_p=0.5)
    assert server.requests[1]["body"] == {"model": MODEL, "messages": HI, "temperature": 0.7, "max_tokens": 16,
                                          "top_p": 0.5}


def test_map_keeps_order_across_threads_and_counts_usage(server, make_client):
    client = make_client(max_workers=4, prompt_price_per_1k=0.01, completion_price_per_1k=0.03)
    assert client.map(lambda i: client.chat(user(f"q{i}")), range(10)) == [f"echo: q{i}" for i in range(10)]
    usage = client.usage
    assert (usage.requests, usage.cache_hits, usage.prompt_tokens, usage.completion_tokens) == (10, 0, 1000, 100)
    assert usage.cost == pytest.approx(1.0 * 0.01 + 0.1 * 0.03)
    assert (client.usage - usage).as_dict() == {"requests": 0, "cache_hits": 0, "prompt_tokens": 0,
                                                "completion_tokens": 0, "cost": 0.0}


# ---------------------------------------------------------------------------------------------------------------
# Retries


@pytest.mark.parametrize("failure, expected_sleeps", [
    ((429, {"Retry-After": "3"}, "slow down"), [3.0, 3.0]),
    ((429, {"retry-after-ms": "250"}, "slow down"), [0.25, 0.25]),
    ((500, {}, "boom"), [0.5, 1.0]),  # no Retry-After: backoff * 2**attempt
    ((503, {}, ""), [0.5, 1.0]),
])
def test_retries_then_succeeds(server, make_client, sleeps, failure, expected_sleeps):
    server.failures = [failure, failure]
    client = make_client(backoff=0.5)
    assert client.chat(HI) is not None
    assert sleeps == expected_sleeps
    assert len(server.requests) == 3
    assert client.usage.as_dict() == {"requests": 3, "cache_hits": 0, "prompt_tokens": 100, "completion_tokens": 10,
                                      "cost": 0.0}


def test_retry_after_as_http_date(server, make_client, sleeps):
    server.failures = [(429, {"Retry-After": email.utils.formatdate(time.time() + 30, usegmt=True)}, "")]
    make_client().chat(HI)
    assert len(sleeps) == 1 and 27 <= sleeps[0] <= 30


def test_backoff_is_capped(server, make_client, sleeps):
    server.failures = [(502, {}, "")] * 4
    make_client(backoff=1.0, max_backoff=3.0).chat(HI)
    assert sleeps == [1.0, 2.0, 3.0, 3.0]


def test_retries_exhausted_fail_clearly(server, make_client, sleeps):
    server.failures = [(503, {}, "overloaded")] * 10
    with pytest.raises(C.JudgeAPIError) as info:
        make_client(max_retries=2).chat(HI)
    message = str(info.value)
    assert "HTTP 503" in message and "overloaded" in message and "after 3 attempts" in message
    assert server.base_url in message
    assert info.value.status == 503 and info.value.url == server.base_url + "/chat/completions"
    assert len(server.requests) == 3 and len(sleeps) == 2


def test_client_errors_are_not_retried(server, make_client, sleeps):
    server.failures = [(400, {}, '{"error": "bad request"}')]
    with pytest.raises(C.JudgeAPIError, match="HTTP 400") as info:
        make_client().chat(HI)
    assert info.value.status == 400 and server.base_url in str(info.value)
    assert len(server.requests) == 1 and sleeps == []


def test_connection_errors_are_retried(tmp_path, sleeps):
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}/v1"
    client = C.ChatClient(base_url, MODEL, API_KEY, cache_dir=tmp_path, max_retries=2, sleep=sleeps.append)
    with pytest.raises(C.JudgeAPIError, match="connection error") as info:
        client.chat(HI)
    assert base_url in str(info.value) and info.value.status is None
    assert sleeps == [1.0, 2.0] and client.usage.requests == 3


@pytest.mark.parametrize("content_type, body", [
    ("text/html", "<html>proxy login page</html>"),
    ("application/json", "[1, 2]"),
    ("application/json", ""),
])
def test_non_json_answer_names_url_and_status(server, make_client, sleeps, tmp_path, content_type, body):
    server.failures = [(200, {"Content-Type": content_type}, body)]
    with pytest.raises(C.JudgeAPIError, match="non-JSON") as info:
        make_client().chat(HI)
    message = str(info.value)
    assert server.base_url + "/chat/completions" in message and "HTTP 200" in message and content_type in message
    assert info.value.status == 200 and isinstance(info.value, PivotError)
    assert len(server.requests) == 1 and sleeps == []  # a wrong service does not get better by asking again
    assert not (tmp_path / "cache").exists()


def test_response_without_choices_is_an_error(server, make_client, tmp_path):
    server.failures = [(200, {"Content-Type": "application/json"}, '{"object": "chat.completion"}')]
    with pytest.raises(C.JudgeAPIError, match=r"no choices\[0\]\.message") as info:
        make_client().chat(HI)
    assert info.value.status is None and not (tmp_path / "cache").exists()


class _AnyRequestHandler(ChatHandler):
    """Records any GET or POST and answers it as a judge would: a followed redirect would be taken as the reply."""

    def do_POST(self):
        fake: FakeChatServer = self.server.fake
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with fake.lock:
            fake.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers)})
        reply = {"choices": [{"message": {"role": "assistant", "content": "[[A]] from elsewhere"}}]}
        self._send(200, {"Content-Type": "application/json"}, json.dumps(reply))

    do_GET = do_POST


@pytest.fixture
def other_host():
    """A second server on `localhost`, another origin than the judge's 127.0.0.1, answering every request."""
    with serving(FakeChatServer(), "localhost", _AnyRequestHandler) as fake:
        yield fake


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_not_followed(server, other_host, make_client, sleeps, tmp_path, caplog, status):
    caplog.set_level(logging.DEBUG)
    elsewhere = other_host.base_url + "/chat/completions"
    server.failures = [(status, {"Location": elsewhere}, "moved")]
    with pytest.raises(C.JudgeAPIError) as info:
        make_client(timeout=5).chat(HI)
    assert other_host.requests == []  # the key never travels to the other host; nothing does
    message = str(info.value)
    assert f"HTTP {status}" in message and "redirect" in message and elsewhere in message
    assert server.base_url + "/chat/completions" in message and info.value.hint
    assert info.value.status == status
    assert isinstance(info.value, PivotError) and isinstance(info.value, RuntimeError)  # old excepts still catch it
    assert len(server.requests) == 1 and sleeps == []  # not retried
    assert not (tmp_path / "cache").exists()
    assert API_KEY not in message + repr(info.value) + caplog.text


def test_same_host_redirect_is_not_followed_either(server, make_client):
    server.failures = [(302, {"Location": "/v1/chat/completions"}, "")]
    with pytest.raises(C.JudgeAPIError, match=re.escape(f"a redirect to {server.base_url}/chat/completions;")):
        make_client().chat(HI)
    assert len(server.requests) == 1


def test_malformed_response_is_an_error_and_not_cached(server, make_client):
    server.failures = [(200, {}, "<html>proxy page</html>")]
    client = make_client()
    with pytest.raises(C.JudgeAPIError, match="non-JSON"):
        client.chat(HI)
    assert client.chat(HI) == "echo: hi"  # the second try reaches the server
    assert len(server.requests) == 2


# ---------------------------------------------------------------------------------------------------------------
# Cache


def test_cache_key_is_the_request_without_host_or_key(server, make_client):
    messages = user("question c1?")
    first = make_client()
    assert first.chat(messages) == "echo: question c1?"
    # A new client (another run), another key: the key is not part of the cache key.
    again = make_client(api_key="sk-another-key")
    assert again.chat(messages) == "echo: question c1?"
    assert again.usage.as_dict() == {"requests": 0, "cache_hits": 1, "prompt_tokens": 0, "completion_tokens": 0,
                                     "cost": 0.0}
    assert len(server.requests) == 1
    # The endpoint's path is part of the key, its host is not: a judge server restarted elsewhere keeps the cache.
    assert make_client(base_url="http://127.0.0.1:9/v1", max_retries=0).chat(messages) == "echo: question c1?"
    assert len(server.requests) == 1
    with pytest.raises(C.JudgeAPIError, match="HTTP 404"):
        make_client(base_url=server.base_url.replace("/v1", "/v2"), max_retries=0).chat(messages)
    del server.requests[1]
    again.chat(messages, temperature=0.7)  # every request parameter is part of the cache key
    again.chat(messages, max_tokens=16)
    again.chat(messages, top_p=0.5)
    make_client(model="other-judge").chat(messages)
    make_client(use_cache=False).chat(messages)
    assert len(server.requests) == 6
    assert server.requests[3]["body"]["top_p"] == 0.5


def test_cache_entries_are_per_request_files(make_client, tmp_path):
    client = make_client(max_workers=4)
    client.map(lambda i: client.chat(user(f"q{i}")), range(6))
    entries = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert len(entries) == 6 and all(p.suffix == ".json" for p in entries)
    entry = json.loads(entries[0].read_text(encoding="utf-8"))
    assert entry["request"]["model"] == MODEL and "choices" in entry["response"]


def test_unreadable_cache_entry_is_refetched(server, make_client, tmp_path, caplog):
    make_client().chat(HI)
    (entry,) = (tmp_path / "cache").rglob("*.json")
    entry.write_text("{truncated", encoding="utf-8")
    assert make_client().chat(HI) == "echo: hi"
    assert len(server.requests) == 2 and "unreadable judge cache entry" in caplog.text
    assert json.loads(entry.read_text(encoding="utf-8"))["response"]["choices"][0]["message"]["content"] == "echo: hi"


# ---------------------------------------------------------------------------------------------------------------
# Rate limiting


def test_rate_limiter_reserves_distinct_slots_across_threads():
    waits = []
    limiter = C.RateLimiter(600, clock=lambda: 100.0, sleep=waits.append)  # 0.1 s apart; time stands still
    threads = [threading.Thread(target=limiter.acquire) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(waits) == pytest.approx([0.1 * k for k in range(1, 8)])  # the first caller does not wait


def test_rate_limit_spaces_real_requests(server):
    client = C.ChatClient(server.base_url, MODEL, API_KEY, use_cache=False, requests_per_minute=600, max_workers=4)
    start = time.monotonic()
    client.map(lambda i: client.chat(user(f"q{i}")), range(6))
    assert time.monotonic() - start >= 0.5 - 0.02  # 6 starts, 0.1 s apart
    arrivals = sorted(r["time"] for r in server.requests)
    assert arrivals[-1] - arrivals[0] >= 0.5 - 0.05


# ---------------------------------------------------------------------------------------------------------------
# Configuration and key hygiene


def test_configuration_from_environment(server, monkeypatch, tmp_path):
    monkeypatch.setenv("PIVOT_JUDGE_BASE_URL", server.base_url + "/")
    monkeypatch.setenv("PIVOT_JUDGE_MODEL", "env-model")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-fallback")
    monkeypatch.setenv("PIVOT_JUDGE_CACHE_DIR", str(tmp_path / "env-cache"))
    client = C.ChatClient()
    assert client.url == server.base_url + "/chat/completions" and client.cache_dir == tmp_path / "env-cache"
    client.chat(user("q"))
    assert server.requests[-1]["headers"]["Authorization"] == "Bearer sk-openai-fallback"
    assert server.requests[-1]["body"]["model"] == "env-model"

    monkeypatch.setenv("PIVOT_JUDGE_API_KEY", "sk-pivot-key")
    C.ChatClient(use_cache=False).chat(user("q"))
    assert server.requests[-1]["headers"]["Authorization"] == "Bearer sk-pivot-key"

    monkeypatch.delenv("PIVOT_JUDGE_API_KEY")
    monkeypatch.delenv("OPENAI_API_KEY")
    C.ChatClient(use_cache=False).chat(user("q"))
    assert "Authorization" not in server.requests[-1]["headers"]  # a local server needs no key

    monkeypatch.delenv("PIVOT_JUDGE_MODEL")
    with pytest.raises(ValueError, match="PIVOT_JUDGE_MODEL"):
        C.ChatClient()


def test_invalid_key_is_rejected_without_echoing_it():
    with pytest.raises(ValueError) as info:
        C.ChatClient("http://127.0.0.1:1/v1", MODEL, "sk-abc\r\nX-Injected: yes")
    assert "sk-abc" not in str(info.value)


def test_api_key_only_in_authorization_header(server, make_client, sleeps, tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.DEBUG)
    # The server echoes the Authorization header into its error bodies, as some proxies do.
    server.failures = [(429, {"Retry-After": "1"}, "rate limited for {auth}")]
    client = make_client()
    replies = client.map(lambda i: client.chat(user(f"k{i}")), range(2))
    server.failures = [(500, {}, "upstream failed for {auth}")] * 10
    with pytest.raises(C.JudgeAPIError) as info:
        make_client(max_retries=1, max_workers=1).chat(user("k3"))
    server.failures = [(401, {}, "invalid key {auth}")]
    with pytest.raises(C.JudgeAPIError) as unauthorized:
        make_client(max_workers=1).chat(user("k4"))

    assert server.requests and all(r["headers"]["Authorization"] == f"Bearer {API_KEY}" for r in server.requests)
    assert sleeps == [1.0, 1.0]
    logged = caplog.text + "".join(repr(r.args) for r in caplog.records)
    assert "retry" in logged and server.base_url in logged  # the logs are there, and they are clean
    assert API_KEY not in logged
    for error in (info.value, unauthorized.value):
        text = str(error) + repr(error) + "".join(traceback.format_exception(error))
        assert "<redacted>" in text and API_KEY not in text
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 2  # the cache entries of k0 and k1
    assert all(API_KEY.encode() not in p.read_bytes() for p in files)
    assert API_KEY not in repr(client) + str(vars(client)) + repr(client.usage) + json.dumps(replies)
