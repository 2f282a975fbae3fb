"""The answer an MLLM must give, and the strict parser for free-text answers.

The schema is closed and small: age 0-100 (integer years), gender ``male``/``female``,
expression one of the seven classes. Every valid answer is one of 101 x 2 x 7 = 1,414 JSON
strings, which is what makes exact constrained decoding and exact scoring cheap.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ...types import EXPRESSIONS

__all__ = [
    "AGES",
    "GENDERS",
    "JSON_SCHEMA",
    "ParsedAnswer",
    "all_answers",
    "answer_text",
    "parse_answer",
]

AGES = tuple(range(101))
GENDERS = ("male", "female")

#: For servers that enforce a JSON schema (OpenAI structured outputs, vLLM guided decoding).
JSON_SCHEMA = {
    "type": "object",
    "properties": {
        "age": {"type": "integer", "minimum": 0, "maximum": 100},
        "gender": {"type": "string", "enum": list(GENDERS)},
        "expression": {"type": "string", "enum": list(EXPRESSIONS)},
    },
    "required": ["age", "gender", "expression"],
    "additionalProperties": False,
}

_REFUSAL = re.compile(
    r"\b(i\s*(?:'m|am)\s*(?:sorry|unable|not able)|i\s*(?:can(?:'|no)?t|cannot|won'?t)\b|as an ai|"
    r"not (?:able|comfortable) to|can't (?:help|assist|determine)|unable to (?:help|assist|determine|identify))",
    re.IGNORECASE,
)


def answer_text(age: int, gender: str, expression: str) -> str:
    """The canonical answer string the prompt asks for."""
    return json.dumps({"age": age, "gender": gender, "expression": expression})


def all_answers() -> list[str]:
    """Every valid canonical answer (1,414 strings)."""
    return [answer_text(a, g, e) for a in AGES for g in GENDERS for e in EXPRESSIONS]


@dataclass(frozen=True)
class ParsedAnswer:
    """A parsed answer; ``valid=False`` carries why (refusal or off-format), never a guess."""

    valid: bool
    age: int | None = None
    gender: str | None = None
    expression: str | None = None
    reason: str | None = None
    refusal: bool = False


def parse_answer(text: str) -> ParsedAnswer:
    """Parse a model's reply: one JSON object with exactly the schema's fields and values.

    A reply that contains no such object is a refusal when it reads like one and off-format
    otherwise. Values outside the schema (age 130, gender ``unknown``) are off-format: the
    parser never maps or rounds them into range.
    """
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`").removeprefix("json").strip()
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end <= start:
        if _REFUSAL.search(body):
            return ParsedAnswer(False, reason="refusal", refusal=True)
        return ParsedAnswer(False, reason=f"off-format: no JSON object in {_clip(body)!r}")
    try:
        data = json.loads(body[start : end + 1])
    except json.JSONDecodeError as err:
        return ParsedAnswer(False, reason=f"off-format: invalid JSON ({err.msg})")
    if not isinstance(data, dict) or set(data) != {"age", "gender", "expression"}:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        return ParsedAnswer(False, reason=f"off-format: expected keys age, gender, expression, got {keys}")
    age, gender, expression = data["age"], data["gender"], data["expression"]
    if isinstance(age, bool) or not isinstance(age, int) or not 0 <= age <= 100:
        return ParsedAnswer(False, reason=f"off-format: age {age!r} is not an integer in 0-100")
    if gender not in GENDERS:
        return ParsedAnswer(False, reason=f"off-format: gender {gender!r} is not male or female")
    if expression not in EXPRESSIONS:
        return ParsedAnswer(False, reason=f"off-format: expression {expression!r} is not one of the options")
    return ParsedAnswer(True, age=age, gender=gender, expression=expression)


def _clip(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."
