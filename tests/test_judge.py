"""LLM judges against a real local OpenAI-compatible HTTP server: prompts, tallies, retries, cache, usage, keys."""

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
from pathlib import Path

import pytest

from pivot_jax.errors import PivotError
from pivot_jax.eval import judge as J

SPECS = Path(__file__).resolve().parents[1].parent / "shared" / "specs"
API_KEY = "sk-test-9f8e7d6c5b4a-SECRET"
MODEL = "judge-model"

PLUG_SYSTEM = (
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

# ---------------------------------------------------------------------------------------------------------------
# A local chat-completions server


class FakeChatServer:
    """State of the local server: what it received, failures to serve first, and replies keyed by question.

    `replies[question][text shown first]` is the judge's reply; without an entry a pairwise judge prefers the longer
    answer and a score judge scores each answer by its length mod 11.
    """

    def __init__(self):
        self.requests: list[dict] = []
        self.failures: list[tuple[int, dict, str]] = []  # (status, headers, body); "{auth}" echoes the header
        self.replies: dict[str, dict[str, str]] = {}
        self.lock = threading.Lock()
        self.base_url = ""

    def questions(self) -> list[str]:
        return [_parse_chat(r["body"]["messages"])[0] for r in self.requests]

    def reply(self, messages: list[dict]) -> str:
        parsed = _parse_chat(messages)
        if parsed is None:
            return "ok"
        question, first, second = parsed
        if question in self.replies:
            return self.replies[question][first]
        if messages[0]["role"] == "system":
            return "[[A]]" if len(first) > len(second) else "[[B]]" if len(first) < len(second) else "[[C]]"
        return f"<score1>{len(first) % 11}</score1><score2>{len(second) % 11}</score2>"


_PAIRWISE_USER = re.compile(r"\[User Question\]\n(.*)\n\n\[The Start of Assistant A's Answer\]\n(.*)\n\[The End of "
                            r"Assistant A's Answer\]\n\n\[The Start of Assistant B's Answer\]\n(.*)\n\[The End of "
                            r"Assistant B's Answer\]", re.S)
_SCORE_USER = re.compile(r"<question>\n(.*)\n</question>\n<answer1>\n(.*)\n</answer1>\n<answer2>\n(.*)\n</answer2>",
                         re.S)


def _parse_chat(messages: list[dict]) -> tuple[str, str, str] | None:
    """(question, answer shown first, answer shown second) from either judge's user message; None for other chats."""
    pattern = _PAIRWISE_USER if messages[0]["role"] == "system" else _SCORE_USER
    match = pattern.search(messages[-1]["content"])
    return match.groups() if match else None


class _Handler(http.server.BaseHTTPRequestHandler):
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


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("PIVOT_JUDGE_BASE_URL", "PIVOT_JUDGE_MODEL", "PIVOT_JUDGE_API_KEY", "OPENAI_API_KEY",
                 "PIVOT_JUDGE_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@contextlib.contextmanager
def _serving(host: str, handler: type, fake: FakeChatServer) -> Iterator[FakeChatServer]:
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


@pytest.fixture
def server():
    with _serving("127.0.0.1", _Handler, FakeChatServer()) as fake:
        yield fake


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_client(server, tmp_path, sleeps):
    def make(**kwargs) -> J.ChatClient:
        kwargs = {"base_url": server.base_url, "model": MODEL, "api_key": API_KEY, "cache_dir": tmp_path / "cache",
                  "sleep": sleeps.append, **kwargs}
        return J.ChatClient(**kwargs)
    return make


def pair(id, language="zh", dataset="alpaca", question=None, answer_a=None, answer_b=None) -> dict:
    return {"id": id, "language": language, "dataset": dataset, "question": question or f"question {id}?",
            "answer_a": answer_a or f"{id}: model A's answer", "answer_b": answer_b or f"{id}: model B's answer"}


# ---------------------------------------------------------------------------------------------------------------
# Prompts


def spec_span(label: str) -> str:
    path = SPECS / "formats.md"
    if not path.is_file():
        pytest.skip(f"spec file {path} is absent (shared/specs is not checked out next to the repository)")
    text = path.read_text(encoding="utf-8")
    start = text.index(label) + len(label)
    return re.search(r"`([^`]*)`", text[start:]).group(1).replace("\\n", "\n")


def test_prompts_match_formats_md():
    assert spec_span("X-AlpacaEval judge (pairwise, GPT-4, temperature 0), system prompt:") == \
        J.PLUG_JUDGE_SYSTEM_PROMPT == PLUG_SYSTEM
    assert spec_span("user prompt:") == J.PLUG_JUDGE_USER_PROMPT
    assert spec_span("`<score2>..</score2>`:") == J.XINSTRUCTION_JUDGE_PROMPT


def test_pairwise_sends_exact_prompts_both_orders(server, make_client):
    item = pair("p1", question="What is 2+2? {x}", answer_a="Four.", answer_b="4")
    J.pairwise_judge(make_client(max_workers=1), [item])
    assert len(server.requests) == 2
    first, second = (r["body"] for r in server.requests)
    assert all(r["path"] == "/v1/chat/completions" for r in server.requests)
    assert first == {"model": MODEL, "temperature": 0.0, "max_tokens": 2048, "messages": [
        {"role": "system", "content": PLUG_SYSTEM},
        {"role": "user", "content": "[User Question]\nWhat is 2+2? {x}\n\n[The Start of Assistant A's Answer]\nFour."
                                    "\n[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n4\n"
                                    "[The End of Assistant B's Answer]"}]}
    assert second["messages"] == [
        {"role": "system", "content": PLUG_SYSTEM},
        {"role": "user", "content": "[User Question]\nWhat is 2+2? {x}\n\n[The Start of Assistant A's Answer]\n4\n"
                                    "[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\nFour."
                                    "\n[The End of Assistant B's Answer]"}]
    assert second["temperature"] == 0
    assert server.requests[0]["headers"]["Content-Type"] == "application/json"


def test_score_sends_exact_prompt_both_orders(server, make_client):
    item = {"question": "Name a prime.", "answer_1": "Seven.", "answer_2": "Nine.", "language": "zh"}
    J.score_judge(make_client(max_workers=1), [item])
    forward, backward = (r["body"] for r in server.requests)
    expected = ("Given the question and the answer in Chinese language. You are a helpful and precise assistant for "
                "checking the quality of the answer in Chinese.\n\n<question>\nName a prime.\n</question>\n<answer1>\n"
                "{one}\n</answer1>\n<answer2>\n{two}\n</answer2>\n\nSuppose the user only speaks the language of the "
                "question, please evaluate both answers with your justification, and only provide a score ranging "
                "from 0 to 10 after your justifications, the score must be an integer. When evaluating the answers, "
                "you should consider the helpfulness, relevance, accuracy, level of details of the answers. The score "
                "for answer 1 should be wrapped by <score1> and </score1>, and the score for answer 2 should be "
                "wrapped by <score2> and </score2>.\n\nPlease only output the scores for the answers, and do not "
                "output the justification and any other information.")
    assert forward == {"model": MODEL, "temperature": 0.0, "max_tokens": 2048,
                       "messages": [{"role": "user", "content": expected.format(one="Seven.", two="Nine.")}]}
    assert backward["messages"] == [{"role": "user", "content": expected.format(one="Nine.", two="Seven.")}]
    assert backward["temperature"] == 0


def test_score_prompt_language_name_from_flores_code():
    content = J.score_messages("q", "a", "b", "fin_Latn")[0]["content"]
    assert content.startswith("Given the question and the answer in Finnish language.")
    assert "the answer in Finnish.\n\n" in content


# ---------------------------------------------------------------------------------------------------------------
# PLUG tally


@pytest.mark.parametrize("text, verdict", [
    ("Assistant A is better. [[A]]", "A"), ("[[B]]", "B"), ("equal [[C]]", "C"),
    ("At first [[B]] looked right, but my final verdict: [[A]]", "A"),
    ("A is better", None), ("[A]", None), ("[[D]]", None), ("", None),
])
def test_parse_verdict(text, verdict):
    assert J.parse_verdict(text) == verdict


@pytest.mark.parametrize("verdict, swapped, outcome", [
    ("A", "A", "win"), ("B", "B", "loss"), ("C", "C", "tie"),  # agree
    ("A", "B", "tie"), ("B", "A", "tie"),  # different winners
    ("A", "C", "win"), ("C", "A", "win"), ("B", "C", "loss"), ("C", "B", "loss"),  # one tie, one win
    (None, "A", "error"), ("A", None, "error"), (None, None, "error"),
])
def test_plug_outcome(verdict, swapped, outcome):
    assert J.plug_outcome(verdict, swapped) == outcome


def test_pairwise_tally_and_breakdowns(server, make_client):
    # id -> (language, dataset, reply with A shown first, reply with the answers swapped, expected outcome)
    cases = {
        "agree_a": ("zh", "alpaca", "[[A]]", "[[B]]", "win"),
        "agree_b": ("zh", "alpaca", "[[B]]", "[[A]]", "loss"),
        "disagree": ("zh", "vicuna", "[[A]]", "[[A]]", "tie"),  # the judge followed the position
        "win_tie": ("ko", "vicuna", "[[A]]", "[[C]]", "win"),
        "tie_loss": ("ko", "alpaca", "[[C]]", "[[A]]", "loss"),
        "tie_tie": ("ko", "vicuna", "[[C]]", "[[C]]", "tie"),
        "unparsable": ("es", "alpaca", "Assistant A is clearly better.", "[[B]]", "error"),
        "last_tag": ("es", "vicuna", "Not [[B]]; final verdict [[A]]", "[[A]], no: [[B]]", "win"),
    }
    items = []
    for id, (language, dataset, ab, ba, _) in cases.items():
        item = pair(id, language, dataset)
        server.replies[item["question"]] = {item["answer_a"]: ab, item["answer_b"]: ba}
        items.append(item)

    result = J.pairwise_judge(make_client(max_workers=4), items)

    assert [r["id"] for r in result["records"]] == list(cases)
    assert {r["id"]: r["outcome"] for r in result["records"]} == {id: c[4] for id, c in cases.items()}
    records = {r["id"]: r for r in result["records"]}
    assert records["tie_loss"] == {"id": "tie_loss", "language": "ko", "dataset": "alpaca", "gate": None,
                                   "judgement_ab": "[[C]]", "judgement_ba": "[[A]]", "verdict_ab": "C",
                                   "verdict_ba": "A", "outcome": "loss"}
    assert records["unparsable"]["verdict_ab"] is None and records["unparsable"]["verdict_ba"] == "B"
    assert len(server.requests) == 16

    summary = result["summary"]
    assert summary["overall"] == {"n": 8, "win": 37.5, "tie": 25.0, "loss": 25.0, "error": 12.5,
                                  "counts": {"win": 3, "tie": 2, "loss": 2, "error": 1}}
    third = pytest.approx(100 / 3)
    assert summary["per_language"] == {
        "es": {"n": 2, "win": 50.0, "tie": 0.0, "loss": 0.0, "error": 50.0,
               "counts": {"win": 1, "tie": 0, "loss": 0, "error": 1}},
        "ko": {"n": 3, "win": third, "tie": third, "loss": third, "error": 0.0,
               "counts": {"win": 1, "tie": 1, "loss": 1, "error": 0}},
        "zh": {"n": 3, "win": third, "tie": third, "loss": third, "error": 0.0,
               "counts": {"win": 1, "tie": 1, "loss": 1, "error": 0}},
    }
    assert summary["per_dataset"] == {
        "alpaca": {"n": 4, "win": 25.0, "tie": 0.0, "loss": 50.0, "error": 25.0,
                   "counts": {"win": 1, "tie": 0, "loss": 2, "error": 1}},
        "vicuna": {"n": 4, "win": 50.0, "tie": 50.0, "loss": 0.0, "error": 0.0,
                   "counts": {"win": 2, "tie": 2, "loss": 0, "error": 0}},
    }
    assert summary["gated"] == 0


def test_mi_eval_gate_decides_without_the_judge(server, make_client):
    items = [pair("wrong_a", answer_a="WRONG LANGUAGE"), pair("wrong_b", answer_b="WRONG LANGUAGE"),
             pair("both_ok", answer_a="a long and fluent answer", answer_b="short")]
    calls = []

    def gate(answer_a: str, answer_b: str, language: str) -> str | None:
        calls.append(language)
        return "B" if answer_a == "WRONG LANGUAGE" else "A" if answer_b == "WRONG LANGUAGE" else None

    result = J.pairwise_judge(make_client(), items, gate=gate)
    assert calls == ["zh"] * 3
    assert [r["outcome"] for r in result["records"]] == ["loss", "win", "win"]
    assert [r["gate"] for r in result["records"]] == ["B", "A", None]
    assert result["records"][0]["judgement_ab"] is None
    assert server.questions() == ["question both_ok?"] * 2  # only the ungated item reached the judge
    assert result["summary"]["gated"] == 2
    assert result["usage"]["requests"] == 2

    with pytest.raises(ValueError, match="gate returned 'C'"):
        J.pairwise_judge(make_client(), [pair("x")], gate=lambda a, b, lang: "C")
    assert len(server.requests) == 2


def test_missing_fields_fail_before_any_request(server, make_client):
    bad = pair("x")
    del bad["dataset"]
    with pytest.raises(ValueError, match="pairwise item 1 lacks dataset"):
        J.pairwise_judge(make_client(), [pair("ok"), bad])
    with pytest.raises(ValueError, match="score item 0 lacks answer_2"):
        J.score_judge(make_client(), [{"question": "q", "answer_1": "a", "language": "zh"}])
    assert server.requests == []


# ---------------------------------------------------------------------------------------------------------------
# X-Instruction scores


@pytest.mark.parametrize("text, scores", [
    ("<score1>8</score1><score2>6</score2>", (8, 6)),
    ("Answer 1 <score1> 10 </score1>, answer 2 <score2>\n0\n</score2>", (10, 0)),
    ("<score1>11</score1><score2>-2</score2>", (-1, -1)),
    ("<score1>7.5</score1><score2>seven</score2>", (-1, -1)),
    ("<score1>4</score1>", (4, -1)),
    ("no scores at all", (-1, -1)),
    ("<score1>2</score1><score2>3</score2> corrected: <score1>5</score1><score2>6</score2>", (5, 6)),
])
def test_parse_scores(text, scores):
    assert J.parse_scores(text) == scores


def test_score_judge_averages_and_counts_errors(server, make_client):
    # id -> (language, reply with answer 1 shown first, reply with the answers swapped)
    cases = {
        "ok": ("zh", "<score1>8</score1> <score2>6</score2>", "<score1>5</score1><score2>9</score2>"),
        "out_of_range": ("zh", "<score1>11</score1><score2>7</score2>", "<score1>4</score1>"),
        "not_integer": ("fi", "<score1>seven</score1><score2> 3 </score2>", "<score1>2</score1><score2>10</score2>"),
        "extremes": ("fi", "<score1>0</score1><score2>10</score2>", "<score1>10</score1><score2>0</score2>"),
    }
    items = []
    for id, (language, forward, backward) in cases.items():
        item = {"id": id, "question": f"question {id}", "answer_1": f"{id} one", "answer_2": f"{id} two",
                "language": language}
        server.replies[item["question"]] = {item["answer_1"]: forward, item["answer_2"]: backward}
        items.append(item)

    result = J.score_judge(make_client(), items)

    records = {r["id"]: r for r in result["records"]}
    assert records["ok"]["scores_12"] == [8, 6] and records["ok"]["scores_21"] == [5, 9]
    assert (records["ok"]["score_1"], records["ok"]["score_2"]) == (8.5, 5.5)  # (8 + 9) / 2, (6 + 5) / 2
    assert records["out_of_range"]["scores_12"] == [-1, 7] and records["out_of_range"]["scores_21"] == [4, -1]
    assert (records["out_of_range"]["score_1"], records["out_of_range"]["score_2"]) == (None, 5.5)
    assert records["out_of_range"]["parse_failures"] == 2
    assert (records["not_integer"]["score_1"], records["not_integer"]["score_2"]) == (None, 2.5)
    assert (records["extremes"]["score_1"], records["extremes"]["score_2"]) == (0.0, 10.0)  # 0 is a score, not an error
    assert len(server.requests) == 8

    summary = result["summary"]
    assert summary["overall"] == {"n": 4, "mean_1": 4.25, "mean_2": 5.875, "errors_1": 2, "errors_2": 0,
                                  "parse_failures": 3}
    assert summary["per_language"] == {
        "fi": {"n": 2, "mean_1": 0.0, "mean_2": 6.25, "errors_1": 1, "errors_2": 0, "parse_failures": 1},
        "zh": {"n": 2, "mean_1": 8.5, "mean_2": 5.5, "errors_1": 1, "errors_2": 0, "parse_failures": 2},
    }


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
    assert client.chat([{"role": "user", "content": "hi"}]) is not None
    assert sleeps == expected_sleeps
    assert len(server.requests) == 3
    assert client.usage.as_dict() == {"requests": 3, "cache_hits": 0, "prompt_tokens": 100, "completion_tokens": 10,
                                      "cost": 0.0}


def test_retry_after_as_http_date(server, make_client, sleeps):
    server.failures = [(429, {"Retry-After": email.utils.formatdate(time.time() + 30, usegmt=True)}, "")]
    make_client().chat([{"role": "user", "content": "hi"}])
    assert len(sleeps) == 1 and 27 <= sleeps[0] <= 30


def test_backoff_is_capped(server, make_client, sleeps):
    server.failures = [(502, {}, "")] * 4
    make_client(backoff=1.0, max_backoff=3.0).chat([{"role": "user", "content": "hi"}])
    assert sleeps == [1.0, 2.0, 3.0, 3.0]


def test_retries_exhausted_fail_clearly(server, make_client, sleeps):
    server.failures = [(503, {}, "overloaded")] * 10
    with pytest.raises(J.JudgeAPIError) as info:
        make_client(max_retries=2).chat([{"role": "user", "content": "hi"}])
    message = str(info.value)
    assert "HTTP 503" in message and "overloaded" in message and "after 3 attempts" in message
    assert server.base_url in message
    assert info.value.status == 503 and info.value.url == server.base_url + "/chat/completions"
    assert len(server.requests) == 3 and len(sleeps) == 2


def test_client_errors_are_not_retried(server, make_client, sleeps):
    server.failures = [(400, {}, '{"error": "bad request"}')]
    with pytest.raises(J.JudgeAPIError, match="HTTP 400") as info:
        make_client().chat([{"role": "user", "content": "hi"}])
    assert info.value.status == 400 and server.base_url in str(info.value)
    assert len(server.requests) == 1 and sleeps == []


def test_connection_errors_are_retried(tmp_path, sleeps):
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}/v1"
    client = J.ChatClient(base_url, MODEL, API_KEY, cache_dir=tmp_path, max_retries=2, sleep=sleeps.append)
    with pytest.raises(J.JudgeAPIError, match="connection error") as info:
        client.chat([{"role": "user", "content": "hi"}])
    assert base_url in str(info.value) and info.value.status is None
    assert sleeps == [1.0, 2.0] and client.usage.requests == 3


@pytest.mark.parametrize("content_type, body", [
    ("text/html", "<html>proxy login page</html>"),
    ("application/json", "[1, 2]"),
    ("application/json", ""),
])
def test_non_json_answer_names_url_and_status(server, make_client, sleeps, tmp_path, content_type, body):
    server.failures = [(200, {"Content-Type": content_type}, body)]
    with pytest.raises(J.JudgeAPIError, match="non-JSON") as info:
        make_client().chat([{"role": "user", "content": "hi"}])
    message = str(info.value)
    assert server.base_url + "/chat/completions" in message and "HTTP 200" in message and content_type in message
    assert info.value.status == 200 and isinstance(info.value, PivotError)
    assert len(server.requests) == 1 and sleeps == []  # a wrong service does not get better by asking again
    assert not (tmp_path / "cache").exists()


class _AnyRequestHandler(_Handler):
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
    with _serving("localhost", _AnyRequestHandler, FakeChatServer()) as fake:
        yield fake


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_not_followed(server, other_host, make_client, sleeps, tmp_path, caplog, status):
    caplog.set_level(logging.DEBUG)
    elsewhere = other_host.base_url + "/chat/completions"
    server.failures = [(status, {"Location": elsewhere}, "moved")]
    with pytest.raises(J.JudgeAPIError) as info:
        make_client(timeout=5).chat([{"role": "user", "content": "hi"}])
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
    with pytest.raises(J.JudgeAPIError, match=re.escape(f"a redirect to {server.base_url}/chat/completions;")):
        make_client().chat([{"role": "user", "content": "hi"}])
    assert len(server.requests) == 1

def test_malformed_response_is_an_error_and_not_cached(server, make_client):
    server.failures = [(200, {}, "<html>proxy page</html>")]
    client = make_client()
    with pytest.raises(J.JudgeAPIError, match="non-JSON"):
        client.chat([{"role": "user", "content": "hi"}])
    assert client.chat([{"role": "user", "content": "hi"}]) is not None  # the second try reaches the server
    assert len(server.requests) == 2


# ---------------------------------------------------------------------------------------------------------------
# Cache, usage, cost


def test_cache_makes_a_rerun_free(server, make_client):
    items = [pair("c1", answer_a="a short answer"), pair("c2", language="ko", dataset="vicuna")]
    first = J.pairwise_judge(make_client(prompt_price_per_1k=0.03, completion_price_per_1k=0.06), items)
    assert len(server.requests) == 4
    assert first["usage"] == {"requests": 4, "cache_hits": 0, "prompt_tokens": 400, "completion_tokens": 40,
                              "cost": pytest.approx(0.4 * 0.03 + 0.04 * 0.06)}

    # A new client (another run), another key: the key is not part of the cache key.
    again = make_client(api_key="sk-another-key", prompt_price_per_1k=0.03, completion_price_per_1k=0.06)
    second = J.pairwise_judge(again, items)
    assert len(server.requests) == 4
    assert second["records"] == first["records"] and second["summary"] == first["summary"]
    assert second["usage"] == {"requests": 0, "cache_hits": 4, "prompt_tokens": 0, "completion_tokens": 0,
                               "cost": 0.0}

    messages = J.pairwise_messages("question c1?", "a short answer", "c1: model B's answer")
    again.chat(messages, temperature=0.0)
    # The endpoint's path is part of the key, its host is not: a judge server restarted elsewhere keeps the cache.
    assert make_client(base_url="http://127.0.0.1:9/v1", max_retries=0).chat(messages) == "[[B]]"  # the longer
    assert len(server.requests) == 4
    with pytest.raises(J.JudgeAPIError, match="HTTP 404"):
        make_client(base_url=server.base_url.replace("/v1", "/v2"), max_retries=0).chat(messages)
    del server.requests[4]
    again.chat(messages, temperature=0.7)  # every request parameter is part of the cache key
    again.chat(messages, max_tokens=16)
    again.chat(messages, top_p=0.5)
    make_client(model="other-judge").chat(messages)
    make_client(use_cache=False).chat(messages)
    assert len(server.requests) == 9
    assert server.requests[6]["body"]["top_p"] == 0.5


def test_cache_entries_are_per_request_files(make_client, tmp_path):
    client = make_client(max_workers=4)
    client.map(lambda i: client.chat([{"role": "user", "content": f"<question>\nq{i}\n</question>\n<answer1>\na\n"
                                       f"</answer1>\n<answer2>\nb\n</answer2>"}]), range(6))
    entries = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert len(entries) == 6 and all(p.suffix == ".json" for p in entries)
    entry = json.loads(entries[0].read_text(encoding="utf-8"))
    assert entry["request"]["model"] == MODEL and "choices" in entry["response"]


def test_usage_with_concurrency_and_prices(server, make_client):
    client = make_client(max_workers=4, prompt_price_per_1k=0.01, completion_price_per_1k=0.03)
    items = [{"question": f"q{i}", "answer_1": "x" * i, "answer_2": "y", "language": "ko"} for i in range(5)]
    result = J.score_judge(client, items)
    assert [r["id"] for r in result["records"]] == list(range(5))
    assert [r["scores_12"] for r in result["records"]] == [[i, 1] for i in range(5)]  # order kept across threads
    usage = client.usage
    assert (usage.requests, usage.prompt_tokens, usage.completion_tokens) == (10, 1000, 100)
    assert usage.cost == pytest.approx(1.0 * 0.01 + 0.1 * 0.03)
    assert result["usage"] == usage.as_dict()


def test_unreadable_cache_entry_is_refetched(server, make_client, tmp_path, caplog):
    messages = [{"role": "user", "content": "hi"}]
    make_client().chat(messages)
    (entry,) = (tmp_path / "cache").rglob("*.json")
    entry.write_text("{truncated", encoding="utf-8")
    assert make_client().chat(messages) == "ok"
    assert len(server.requests) == 2 and "unreadable judge cache entry" in caplog.text
    assert json.loads(entry.read_text(encoding="utf-8"))["response"]["choices"][0]["message"]["content"] == "ok"


# ---------------------------------------------------------------------------------------------------------------
# Rate limiting


def test_rate_limiter_reserves_distinct_slots_across_threads():
    waits = []
    limiter = J.RateLimiter(600, clock=lambda: 100.0, sleep=waits.append)  # 0.1 s apart; time stands still
    threads = [threading.Thread(target=limiter.acquire) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(waits) == pytest.approx([0.1 * k for k in range(1, 8)])  # the first caller does not wait


def test_rate_limit_spaces_real_requests(server):
    client = J.ChatClient(server.base_url, MODEL, API_KEY, use_cache=False, requests_per_minute=600, max_workers=4)
    start = time.monotonic()
    client.map(lambda i: client.chat([{"role": "user", "content": f"<question>\nq{i}\n</question>\n<answer1>\na\n"
                                       f"</answer1>\n<answer2>\nb\n</answer2>"}]), range(6))
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
    client = J.ChatClient()
    assert client.url == server.base_url + "/chat/completions" and client.cache_dir == tmp_path / "env-cache"
    client.chat([{"role": "user", "content": "<question>\nq\n</question>\n<answer1>\na\n</answer1>\n<answer2>\nb\n"
                                             "</answer2>"}])
    assert server.requests[-1]["headers"]["Authorization"] == "Bearer sk-openai-fallback"
    assert server.requests[-1]["body"]["model"] == "env-model"

    monkeypatch.setenv("PIVOT_JUDGE_API_KEY", "sk-pivot-key")
    J.ChatClient(use_cache=False).chat([{"role": "user", "content": "<question>\nq\n</question>\n<answer1>\na\n"
                                                                    "</answer1>\n<answer2>\nb\n</answer2>"}])
    assert server.requests[-1]["headers"]["Authorization"] == "Bearer sk-pivot-key"

    monkeypatch.delenv("PIVOT_JUDGE_API_KEY")
    monkeypatch.delenv("OPENAI_API_KEY")
    J.ChatClient(use_cache=False).chat([{"role": "user", "content": "<question>\nq\n</question>\n<answer1>\na\n"
                                                                    "</answer1>\n<answer2>\nb\n</answer2>"}])
    assert "Authorization" not in server.requests[-1]["headers"]  # a local server needs no key

    monkeypatch.delenv("PIVOT_JUDGE_MODEL")
    with pytest.raises(ValueError, match="PIVOT_JUDGE_MODEL"):
        J.ChatClient()


def test_invalid_key_is_rejected_without_echoing_it():
    with pytest.raises(ValueError) as info:
        J.ChatClient("http://127.0.0.1:1/v1", MODEL, "sk-abc\r\nX-Injected: yes")
    assert "sk-abc" not in str(info.value)


def test_api_key_only_in_authorization_header(server, make_client, sleeps, tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.DEBUG)
    # The server echoes the Authorization header into its error bodies, as some proxies do.
    server.failures = [(429, {"Retry-After": "1"}, "rate limited for {auth}")]
    client = make_client()
    result = J.pairwise_judge(client, [pair("k1"), pair("k2")])
    server.failures = [(500, {}, "upstream failed for {auth}")] * 10
    with pytest.raises(J.JudgeAPIError) as info:
        J.pairwise_judge(make_client(max_retries=1, max_workers=1), [pair("k3")])
    server.failures = [(401, {}, "invalid key {auth}")]
    with pytest.raises(J.JudgeAPIError) as unauthorized:
        J.score_judge(make_client(max_workers=1),
                      [{"question": "q", "answer_1": "a", "answer_2": "b", "language": "zh"}])

    assert server.requests and all(r["headers"]["Authorization"] == f"Bearer {API_KEY}" for r in server.requests)
    assert sleeps == [1.0, 1.0]
    logged = caplog.text + "".join(repr(r.args) for r in caplog.records)
    assert "retry" in logged and server.base_url in logged  # the logs are there, and they are clean
    assert API_KEY not in logged
    for error in (info.value, unauthorized.value):
        text = str(error) + repr(error) + "".join(traceback.format_exception(error))
        assert "<redacted>" in text and API_KEY not in text
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 4  # the cache entries of k1 and k2
    assert all(API_KEY.encode() not in p.read_bytes() for p in files)
    assert API_KEY not in repr(client) + str(vars(client)) + repr(client.usage) + json.dumps(result)
