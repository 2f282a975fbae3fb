"""The token trie of every valid answer, built from the model's own tokenizer.

Each of the 1,414 canonical answers is tokenized whole, as the model would write it right after
its generation prompt (a SentencePiece tokenizer gives ``▁{`` after ``ASSISTANT:`` and ``{``
elsewhere), and inserted; a node knows which ages, genders and expressions lie below it. That
one structure drives both answer modes:

- constrained decoding allows, at each step, only the children of the node reached so far
  (and end-of-sequence at a leaf), so nothing but a valid answer can come out, whatever the
  tokenizer does with numbers or quotes;
- scored readout walks the trie slot by slot: the probability of ``age = a`` is the sum of
  the probabilities of the paths to the nodes where the age becomes ``a`` for certain, which
  stays exact when an age spans several tokens (digit by digit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...types import EXPRESSIONS
from .schema import AGES, GENDERS, answer_text

__all__ = ["SLOTS", "AnswerTrie", "Node", "encoder_in_context"]

Slot = Literal["age", "gender", "expression"]
SLOTS: tuple[Slot, ...] = ("age", "gender", "expression")


@dataclass
class Node:
    children: dict[int, Node] = field(default_factory=dict)
    values: dict[str, set] = field(default_factory=lambda: {s: set() for s in SLOTS})
    leaf: bool = False

    def determined(self, slot: Slot) -> bool:
        return len(self.values[slot]) == 1

    def value(self, slot: Slot):
        (v,) = self.values[slot]
        return v


class AnswerTrie:
    """Trie over the token ids of every canonical answer.

    Args:
        encode: answer text -> its token ids as the model would write them; or a list of
            such sequences when the answer has several surface forms (see
            :func:`encoder_in_context`), each inserted.
    """

    def __init__(self, encode) -> None:
        self.root = Node()
        self.max_len = 0
        for age in AGES:
            for gender in GENDERS:
                for expression in EXPRESSIONS:
                    encoded = encode(answer_text(age, gender, expression))
                    forms = encoded if encoded and isinstance(encoded[0], list) else [list(encoded)]
                    for ids in forms:
                        self._insert(ids, {"age": age, "gender": gender, "expression": expression})
                        self.max_len = max(self.max_len, len(ids))

    def _insert(self, ids: list[int], values: dict) -> None:
        node = self.root
        self._note(node, values)
        for token in ids:
            node = node.children.setdefault(token, Node())
            self._note(node, values)
        node.leaf = True

    @staticmethod
    def _note(node: Node, values: dict) -> None:
        for slot in SLOTS:
            node.values[slot].add(values[slot])

    def walk(self, ids) -> Node | None:
        """The node reached by ``ids`` from the root, or None when they leave the trie."""
        node = self.root
        for token in ids:
            node = node.children.get(int(token))
            if node is None:
                return None
        return node

    def allowed(self, ids) -> list[int] | None:
        """Tokens allowed after ``ids``: children, ``[]`` at a leaf (only EOS), None if off-trie."""
        node = self.walk(ids)
        if node is None:
            return None
        return list(node.children)


def encoder_in_context(tokenize, context: str):
    """answer text -> its token sequences as written right after ``context`` (the rendered
    generation prompt): the tokens of ``context + answer`` past those of ``context``.

    When the context ends in a non-space character (``ASSISTANT:``), the answer may come with
    or without a leading space, and both forms are returned; a form whose tokens would merge
    with the context's last tokens cannot be written after it and is left out.

    Args:
        tokenize: text -> token ids, without special tokens.
        context: the prompt as rendered, generation prompt included.

    Raises:
        ValueError: no form of an answer can follow the context.
    """
    base = list(tokenize(context))
    prefixes = ["", " "] if context and not context[-1].isspace() else [""]

    def encode(answer: str) -> list[list[int]]:
        forms = []
        for prefix in prefixes:
            ids = list(tokenize(context + prefix + answer))
            if ids[: len(base)] == base and len(ids) > len(base):
                forms.append(ids[len(base) :])
        if not forms:
            raise ValueError(f"the answer {answer!r} cannot follow the prompt's last tokens")
        return forms

    return encode
