"""LLM judges against a real local OpenAI-compatible HTTP server: prompts, verdicts, tallies, scores, resuming.

The client itself (retries, redirects, cache keys, rate limits, key hygiene) is `test_chat_client.py`'s.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_chat_client import API_KEY, MODEL, FakeChatServer, clear_env, serving

from pivot_jax.eval import judge as J
from pivot_jax.eval.chat_client import ChatClient, JudgeAPIError

SPECS = Path(__file__).resolve().parents[1].parent / "shared" / "specs"

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
# A local chat-completions server that answers as a judge


class JudgeServer(FakeChatServer):
    """`replies[question][text shown first]` is the judge's reply; without an entry a pairwise judge prefers the
    longer answer and a score judge scores each answer by its length mod 11."""

    def __init__(self):
        super().__init__()
        self.replies: dict[str, dict[str, str]] = {}

    def questions(self) -> list[str]:
        return [_parse_chat(r["body"]["messages"])[0] for r in self.requests]

    def reply(self, messages: list[dict]) -> str:
        parsed = _parse_chat(messages)
        if parsed is None:
            return super().reply(messages)
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


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    clear_env(monkeypatch)


@pytest.fixture
def server():
    with serving(JudgeServer()) as fake:
        yield fake


@pytest.fixture
def make_client(server, tmp_path):
    def make(**kwargs) -> ChatClient:
        kwargs = {"base_url": server.base_url, "model": MODEL, "api_key": API_KEY, "cache_dir": tmp_path / "cache",
                  "sleep": lambda seconds: None, **kwargs}
        return ChatClient(**kwargs)
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
# Usage, resuming, API failures


def test_rerun_is_answered_from_the_cache(server, make_client):
    items = [pair("c1", answer_a="a short answer"), pair("c2", language="ko", dataset="vicuna")]
    first = J.pairwise_judge(make_client(prompt_price_per_1k=0.03, completion_price_per_1k=0.06), items)
    assert len(server.requests) == 4
    assert first["usage"] == {"requests": 4, "cache_hits": 0, "prompt_tokens": 400, "completion_tokens": 40,
                              "cost": pytest.approx(0.4 * 0.03 + 0.04 * 0.06)}
    second = J.pairwise_judge(make_client(prompt_price_per_1k=0.03, completion_price_per_1k=0.06), items)
    assert len(server.requests) == 4
    assert second["records"] == first["records"] and second["summary"] == first["summary"]
    assert second["usage"] == {"requests": 0, "cache_hits": 4, "prompt_tokens": 0, "completion_tokens": 0,
                               "cost": 0.0}


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


def test_api_failures_propagate(server, make_client):
    server.failures = [(401, {}, "invalid key")]
    with pytest.raises(JudgeAPIError, match="HTTP 401"):
        J.score_judge(make_client(max_workers=1),
                      [{"question": "q", "answer_1": "a", "answer_2": "b", "language": "zh"}])
    server.failures = [(500, {}, "upstream failed")] * 10
    with pytest.raises(JudgeAPIError, match="after 2 attempts"):
        J.pairwise_judge(make_client(max_retries=1, max_workers=1), [pair("k3")])
