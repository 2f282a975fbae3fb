"""Reading field distributions from an OpenAI-compatible server's ``top_logprobs``: what is
exact and what is approximate (see pipeline/estimators/mllm/logprobs.py)."""

from __future__ import annotations

import math

import pytest
from tracklens.pipeline.estimators.mllm.logprobs import read_scored_answer


def _tok(token: str, p: float, alternatives: dict[str, float] | None = None) -> dict:
    alts = {token: p, **(alternatives or {})}
    return {"token": token, "logprob": math.log(p), "top_logprobs": [{"token": t, "logprob": math.log(q)} for t, q in alts.items()]}


def _answer(age_tokens: list[dict], gender: dict, expression: dict) -> list[dict]:
    return [_tok('{"age": ', 1.0), *age_tokens, _tok(', "gender": "', 1.0), gender, _tok('", "expression": "', 1.0), expression,
            _tok('"}', 1.0)]  # fmt: skip


def test_values_decided_by_one_token_are_read_exactly():
    """Whole-number ages, and words that differ at their first token: each alternative that
    writes a value out gives it its probability; one that only starts a value another
    alternative writes out (another tokenization) is not counted twice."""
    tokens = _answer([_tok("34", 0.5, {"33": 0.2, "35": 0.1, "3": 0.05, "x": 0.1})],
                     _tok("female", 0.6, {"male": 0.3, "f": 0.05}), _tok("happy", 0.7, {"neutral": 0.2, "sad": 0.05}))  # fmt: skip
    answer = read_scored_answer(tokens, whole_numbers=True)
    total = 0.5 + 0.2 + 0.1 + 0.05  # "x" leaves the answer space; "3" writes out age 3 (one token per number)
    assert answer.age[34] == pytest.approx(0.5 / total) and answer.age[3] == pytest.approx(0.05 / total)
    assert answer.age[30:40].sum() + answer.age[3] == pytest.approx(1.0)
    assert answer.p_female == pytest.approx(0.6 / 0.9)  # "f" only starts female, which "female" writes out
    assert answer.expression[1] == pytest.approx(0.7 / 0.95)  # happy


def test_digit_by_digit_ages_are_exact_along_the_answer_and_shared_out_elsewhere():
    """"3" then "4": the second digit's alternatives are exact (P(3) P(d|3)); another first
    digit "4" allows 4 and 40-49 and is shared among them equally (approximate)."""
    tokens = _answer([_tok("3", 0.6, {"4": 0.3}), _tok("4", 0.5, {"5": 0.25, ",": 0.25})],
                     _tok("male", 0.9, {"female": 0.1}), _tok("sad", 1.0))  # fmt: skip
    answer = read_scored_answer(tokens, whole_numbers=False)
    assert answer.age[34] == pytest.approx(0.6 * 0.5 / 0.9) and answer.age[35] == pytest.approx(0.6 * 0.25 / 0.9)
    assert answer.age[3] == pytest.approx(0.6 * 0.25 / 0.9)  # "3" then ","
    assert all(answer.age[a] == pytest.approx(0.3 / 11 / 0.9) for a in [4, *range(40, 50)])
    assert answer.p_female == pytest.approx(0.1)


def test_an_answer_without_all_fields_gives_none():
    assert read_scored_answer([_tok('{"age": 3', 1.0)], whole_numbers=False) is None


def test_a_young_age_with_whole_number_tokens_stays_young():
    """Regression (review): whether numbers were whole tokens was guessed from one answer's
    alternatives; single-digit alternatives of a confident 7 were then read as first digits
    and spread over 60-89. The tokenizer's property is given, not guessed."""
    tokens = _answer([_tok("7", 0.5, {"8": 0.3, "6": 0.2})], _tok("male", 1.0), _tok("sad", 1.0))
    answer = read_scored_answer(tokens, whole_numbers=True)
    assert answer.age[[6, 7, 8]] == pytest.approx([0.2, 0.5, 0.3]) and answer.age[10:].sum() == 0
