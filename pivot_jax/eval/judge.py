"""LLM judges over an OpenAI-compatible chat API: PLUG's pairwise X-AlpacaEval judge and X-Instruction's score judge.

The prompts are the papers' published ones (`shared/specs/formats.md`) and must stay byte-identical to them: the tests
pin them. The judges talk to the API through `pivot_jax.eval.chat_client.ChatClient` (retries, rate limiting, the
response cache, usage and cost accounting, key hygiene); API failures raise its `JudgeAPIError`.
"""

from __future__ import annotations

import collections
import logging
import re
from typing import Any, Callable, Mapping, Sequence

from pivot_jax.data.formats import language_name
from pivot_jax.eval.chat_client import DEFAULT_MAX_TOKENS, ChatClient

log = logging.getLogger(__name__)


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
