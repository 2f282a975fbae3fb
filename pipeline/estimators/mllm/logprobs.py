"""Field distributions from the token log-probabilities an OpenAI-compatible server returns.

The server generates the answer (constrained to the schema, temperature 0) and returns, at
each generated token, its ``top_logprobs``: the K most likely tokens there, as text. For each
field the reading starts at the token where the field's value begins and follows the generated
answer token by token:

- an alternative token that writes a value out gives that value its probability (the path's
  probability so far times the token's): **exact**, up to the server's own rounding. So gender
  and expression words that differ at their first token, and ages that are one token each (a
  property of the server's tokenizer, given by the caller), are read exactly, as the
  transformers backend reads them; an alternative that only starts a value another alternative
  writes out at the same position is another tokenization of it and is not counted again;
- an alternative that leaves several values possible (another first digit of a multi-digit
  age: ``4`` after ``{"age": `` allows 4 and 40-49) gives its probability to those values in
  equal shares: **approximate**; the generated token itself is followed to the next position,
  where the same rules apply, so ages along the generated path are exact;
- tokens outside the top K are not seen: each distribution is renormalised over what was;
- each field is read in the context of the answer generated before it (the greedy values),
  where the transformers backend uses the most likely values; for a one-token field the two
  are the same.

Nothing here imports torch.
"""

from __future__ import annotations

import math
import re

import numpy as np

from ...types import EXPRESSIONS
from .base import ScoredAnswer
from .schema import AGES, GENDERS

__all__ = ["read_scored_answer"]

_SPANS = {
    "age": re.compile(r'"age"\s*:\s*(\d+)'),
    "gender": re.compile(r'"gender"\s*:\s*"([a-z]+)"'),
    "expression": re.compile(r'"expression"\s*:\s*"([a-z]+)"'),
}


def read_scored_answer(tokens: list[dict], whole_numbers: bool) -> ScoredAnswer | None:
    """The distributions of an answer's ``choices[0].logprobs.content`` (``token``, ``logprob``,
    ``top_logprobs``); None when the generated text holds no complete answer.

    ``whole_numbers``: the server's tokenizer writes a number as one token (``34``), so a bare
    number token writes that age out; otherwise (digit by digit) ``3`` starts 3 and 30-39.
    It is a property of the tokenizer, not guessed from the alternatives of one answer."""
    text = "".join(t["token"] for t in tokens)
    starts = np.cumsum([0] + [len(t["token"]) for t in tokens])
    fields = {}
    for field, options, terminal in (("age", [str(a) for a in AGES], _ends_number), ("gender", list(GENDERS), _ends_quote),
                                     ("expression", list(EXPRESSIONS), _ends_quote)):  # fmt: skip
        match = _SPANS[field].search(text)
        if match is None:
            return None
        fields[field] = _field(tokens, starts, match.start(1), options, terminal, whole_numbers)
    age = np.array([fields["age"].get(str(a), 0.0) for a in AGES])
    expression = np.array([fields["expression"].get(e, 0.0) for e in EXPRESSIONS])
    if age.sum() <= 0 or expression.sum() <= 0 or not fields["gender"]:
        return None
    return ScoredAnswer(age=age / age.sum(), p_female=fields["gender"].get("female", 0.0), expression=expression / expression.sum())


def _ends_number(rest: str) -> bool:
    return bool(rest) and not rest[0].isdigit()


def _ends_quote(rest: str) -> bool:
    return rest.startswith('"')


def _field(tokens: list[dict], starts, value_start: int, options: list[str], terminal, whole_numbers: bool) -> dict[str, float]:
    """Normalised probability of each option, read from the token where the value starts."""
    j = int(np.searchsorted(starts, value_start, side="right")) - 1
    lead = value_start - int(starts[j])  # characters of token j before the value
    # A bare value with nothing after it writes the value out when the tokenizer writes values as
    # one token (words; numbers with whole-number tokens); split digits write "3" for 3 and 30-39.
    whole = terminal is not _ends_number or whole_numbers
    consumed, path_lp, mass = "", 0.0, {}
    candidates = list(options)
    while j < len(tokens) and len(candidates) > 1:
        chosen = tokens[j]["token"]
        readings = []
        for alt in _alternatives(tokens[j]):
            token = alt["token"]
            if token == chosen or token[:lead] != chosen[:lead]:
                continue  # the generated token is followed below; another prefix is another answer's structure
            seen = consumed + token[lead:]
            done = [o for o in candidates if _completes(o, seen, whole, terminal)]
            readings.append((alt["logprob"], done, [o for o in candidates if o.startswith(seen)]))
        completed = {o for _, done, _ in readings for o in done}
        completed |= {o for o in candidates if _completes(o, consumed + chosen[lead:], whole, terminal)}
        for logprob, done, open_ in readings:
            # a token that completes a value counts for it alone (exact); one that only starts values
            # counts for those no alternative here completes (another tokenization of those is not read)
            share_of = done or [o for o in open_ if o not in completed]
            for option in share_of:
                mass[option] = mass.get(option, 0.0) + math.exp(path_lp + logprob) / len(share_of)
        consumed += chosen[lead:]
        path_lp += tokens[j]["logprob"]
        candidates = [o for o in candidates if _fits(o, consumed, terminal)]
        lead, j = 0, j + 1
    for option in candidates:  # the generated path decided the value
        mass[option] = mass.get(option, 0.0) + math.exp(path_lp) / max(len(candidates), 1)
    total = sum(mass.values())
    return {o: m / total for o, m in mass.items()} if total > 0 else {}


def _completes(option: str, seen: str, whole: bool, terminal) -> bool:
    """Whether ``seen`` writes ``option`` out: followed by what ends a value, or bare when values
    are single tokens (``whole``)."""
    return (seen == option and whole) or (seen.startswith(option) and terminal(seen[len(option) :]))


def _alternatives(token: dict) -> list[dict]:
    return token.get("top_logprobs") or [{"token": token["token"], "logprob": token["logprob"]}]


def _fits(option: str, seen: str, terminal) -> bool:
    """Whether the value text so far (``seen``) can still become ``option``: a prefix of it, or
    the whole option followed by what ends the value."""
    if option.startswith(seen):
        return True
    return seen.startswith(option) and terminal(seen[len(option) :])
