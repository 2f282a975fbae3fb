"""The MLLM's answers computed the plain way, to check the backend's fast paths against.

No cache, no tree mask, no positions of ours: every probability comes from an ordinary forward
pass of the model over the prompt followed by an answer prefix, in which the model places its
own positions (M-RoPE included). Only the answer trie (which token sequences are answers) is
shared with the backend; its tokenization is tested on its own.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from tracklens.pipeline.estimators.mllm.schema import AGES
from tracklens.pipeline.estimators.mllm.trie import SLOTS
from tracklens.pipeline.types import EXPRESSIONS

__all__ = ["PlainModel", "reference_constrained", "reference_scores"]


class PlainModel:
    """Next-token log-probabilities after the prompt of one request and a token path."""

    def __init__(self, backend, request) -> None:
        self.backend, self.inputs, self._memo = backend, backend._inputs([request]), {}

    @torch.inference_mode()
    def after(self, path: list[int]) -> torch.Tensor:
        key = tuple(path)
        if key not in self._memo:
            extra = torch.tensor([path], dtype=self.inputs["input_ids"].dtype)
            feed = dict(self.inputs)
            feed["input_ids"] = torch.cat([self.inputs["input_ids"], extra], 1)
            feed["attention_mask"] = torch.ones_like(feed["input_ids"])
            for name in ("mm_token_type_ids", "token_type_ids"):  # the answer is text
                if name in feed:
                    feed[name] = torch.cat([self.inputs[name], torch.zeros_like(extra)], 1)
            self._memo[key] = self.backend.model(**feed).logits[0, -1].float().log_softmax(-1)
        return self._memo[key]


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def reference_scores(backend, request) -> dict[str, np.ndarray | float]:
    """``{"age": (101,), "p_female": float, "expression": (7,)}``: each field's distribution over
    the trie's token paths, the next field read after the most likely value's most likely path."""
    plain = PlainModel(backend, request)
    node, path, dists = backend.trie.root, [], {}
    for slot in SLOTS:
        if node.determined(slot):
            dists[slot] = {node.value(slot): 1.0}
            continue
        totals, best = {}, {}
        stack = [(node, [], 0.0)]
        while stack:
            current, sub, lp = stack.pop()
            logprobs = plain.after(path + sub)
            for token, child in current.children.items():
                child_lp = lp + float(logprobs[token])
                if child.determined(slot):
                    value = child.value(slot)
                    totals.setdefault(value, []).append(child_lp)
                    if value not in best or child_lp > best[value][0]:
                        best[value] = (child_lp, sub + [token], child)
                else:
                    stack.append((child, sub + [token], child_lp))
        sums = {v: _logsumexp(lps) for v, lps in totals.items()}
        norm = _logsumexp(list(sums.values()))
        dists[slot] = {v: math.exp(t - norm) for v, t in sums.items()}
        _, sub, node = best[max(dists[slot], key=dists[slot].get)]
        path += sub
    return {
        "age": np.array([dists["age"].get(a, 0.0) for a in AGES]),
        "p_female": dists["gender"].get("female", 0.0),
        "expression": np.array([dists["expression"].get(e, 0.0) for e in EXPRESSIONS]),
    }


def reference_constrained(backend, request) -> str:
    """Greedy decoding inside the trie, one plain forward per token."""
    plain = PlainModel(backend, request)
    node, path = backend.trie.root, []
    while node.children:
        logprobs = plain.after(path)
        token = max(node.children, key=lambda t: float(logprobs[t]))
        path.append(token)
        node = node.children[token]
    return backend.tokenizer.decode(path, skip_special_tokens=True)
