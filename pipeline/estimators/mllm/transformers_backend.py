"""MLLM backend on transformers: any ``AutoModelForImageTextToText`` by hub id or local path.

Batches are left-padded. Three ways to answer:

- ``generate(constrained=False)``: free greedy generation (temperature 0);
- ``generate(constrained=True)``: greedy generation through a logits processor that allows
  only continuations inside the answer trie, so the output is always a valid answer;
- ``score``: one batched forward pass over the prompts, then short cached extensions that
  walk the answer trie slot by slot (age, then gender given the most likely age, then
  expression given both), giving a probability distribution per field.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict

import numpy as np
import torch

from ...config import TransformersBackendConfig
from ...errors import ModelError
from ...types import EXPRESSIONS
from .base import MllmRequest, ScoredAnswer
from .schema import AGES
from .trie import SLOTS, AnswerTrie, Node

__all__ = ["TransformersBackend"]

log = logging.getLogger(__name__)


class TransformersBackend:
    """See the module docstring. Weights load once, on construction, then a warm-up runs."""

    def __init__(self, config: TransformersBackendConfig) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.config = config
        self.device = torch.device(config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = {"auto": None, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[config.dtype]
        if dtype is None:
            dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        try:
            self.processor = AutoProcessor.from_pretrained(config.model, local_files_only=config.local_files_only)
            self.model = AutoModelForImageTextToText.from_pretrained(
                config.model, dtype=dtype, local_files_only=config.local_files_only
            )
        except (OSError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelError(f"cannot load MLLM {config.model!r}: {first}") from None
        self.model.to(self.device).eval()
        self.dtype = dtype
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model_id = config.model_id or str(config.model)
        self.trie = AnswerTrie(lambda text: self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if config.warmup:
            self._warmup()

    def _warmup(self) -> None:
        from .prompts import load_prompt

        blank = np.full((64, 64, 3), 128, np.uint8)
        request = MllmRequest(load_prompt("person-v1").messages(True, False), [blank])
        self.generate([request], constrained=True)

    # -- inputs -------------------------------------------------------------------------------

    def _inputs(self, requests: list[MllmRequest]) -> dict:
        from PIL import Image

        texts = [self.processor.apply_chat_template(r.messages, add_generation_prompt=True, tokenize=False) for r in requests]
        images = [[Image.fromarray(np.ascontiguousarray(im)) for im in r.images] for r in requests]
        batch = self.processor(text=texts, images=images, padding=True, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.dtype)
        return batch

    # -- generation ---------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(self, requests: list[MllmRequest], constrained: bool) -> list[str]:
        """Greedy answers, one string per request (list in, list out, same order)."""
        from transformers import LogitsProcessorList

        inputs = self._inputs(requests)
        prompt_len = inputs["input_ids"].shape[1]
        eos = self.tokenizer.eos_token_id
        processors = LogitsProcessorList([_TrieConstraint(self.trie, prompt_len, eos)]) if constrained else None
        out = self.model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=self.trie.max_len + 1 if constrained else self.config.max_new_tokens,
            logits_processor=processors,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=eos,
        )
        return self.tokenizer.batch_decode(out[:, prompt_len:], skip_special_tokens=True)

    # -- scored readout -----------------------------------------------------------------------

    @torch.inference_mode()
    def score(self, requests: list[MllmRequest]) -> list[ScoredAnswer]:
        """Field distributions per request (list in, list out, same order)."""
        inputs = self._inputs(requests)
        mask = inputs["attention_mask"]
        out = self.model(**inputs, position_ids=(mask.cumsum(-1) - 1).clamp(min=0), use_cache=True)
        last = out.logits[:, -1].float().log_softmax(-1)
        answers = []
        for i in range(len(requests)):
            cache = _cache_rows(out.past_key_values, torch.tensor([i], device=self.device))
            answers.append(self._score_one(cache, mask[i : i + 1], last[i]))
        return answers

    def _score_one(self, cache, mask: torch.Tensor, logprobs: torch.Tensor) -> ScoredAnswer:
        node = self.trie.root
        dists: dict[str, dict] = {}
        for k, slot in enumerate(SLOTS):
            dist, best_path = self._slot(cache, mask, logprobs, node, slot)
            dists[slot] = dist
            if k + 1 < len(SLOTS):
                # continue from the most likely value: the next field is read in its context
                for token in best_path:
                    node = node.children[token]
                if best_path:
                    logprobs, cache, mask = self._extend(cache, mask, best_path)
        age = np.array([dists["age"].get(a, 0.0) for a in AGES])
        expression = np.array([dists["expression"].get(e, 0.0) for e in EXPRESSIONS])
        return ScoredAnswer(age=age, p_female=float(dists["gender"].get("female", 0.0)), expression=expression)

    def _slot(self, cache, mask, logprobs: torch.Tensor, start: Node, slot: str) -> tuple[dict, list[int]]:
        """Breadth-first walk below ``start`` until each path fixes the slot's value.

        Returns the normalised distribution over values and the token path to the most
        likely value's node. Paths are scored by the unconstrained model and renormalised
        over the valid answers.
        """
        if start.determined(slot):
            return {start.value(slot): 1.0}, []
        per_value: dict = defaultdict(list)
        best: dict = {}
        frontier: list[tuple[Node, list[int], float]] = [(start, [], 0.0)]
        level = logprobs[None]
        while frontier:
            nxt = []
            for (node, path, lp), row in zip(frontier, level):
                for token, child in node.children.items():
                    clp = lp + float(row[token])
                    if child.determined(slot):
                        value = child.value(slot)
                        per_value[value].append(clp)
                        if value not in best or clp > best[value][0]:
                            best[value] = (clp, path + [token])
                    else:
                        nxt.append((child, path + [token], clp))
            frontier = nxt
            if frontier:
                level = self._extend_many(cache, mask, [p for _, p, _ in frontier])
        totals = {v: _logsumexp(lps) for v, lps in per_value.items()}
        norm = _logsumexp(list(totals.values()))
        dist = {v: math.exp(t - norm) for v, t in totals.items()}
        top = max(dist, key=dist.get)
        return dist, best[top][1]

    def _forward_tokens(self, cache, mask: torch.Tensor, ids: torch.Tensor):
        n, d = ids.shape
        full_mask = torch.cat([mask.expand(n, -1), torch.ones(n, d, dtype=mask.dtype, device=mask.device)], 1)
        positions = full_mask.cumsum(-1)[:, -d:] - 1
        out = self.model(input_ids=ids, attention_mask=full_mask, position_ids=positions, past_key_values=cache, use_cache=True)
        return out, full_mask

    def _extend_many(self, cache, mask: torch.Tensor, paths: list[list[int]]) -> torch.Tensor:
        """Log-probabilities after each of several equal-length paths, on copies of ``cache``."""
        ids = torch.tensor(paths, device=self.device)
        rows = _cache_rows(cache, torch.zeros(len(paths), dtype=torch.long, device=self.device))
        out, _ = self._forward_tokens(rows, mask, ids)
        return out.logits[:, -1].float().log_softmax(-1)

    def _extend(self, cache, mask: torch.Tensor, path: list[int]):
        """Feed ``path`` into ``cache`` (in place); returns new log-probs, cache, mask."""
        out, full_mask = self._forward_tokens(cache, mask, torch.tensor([path], device=self.device))
        return out.logits[0, -1].float().log_softmax(-1), out.past_key_values, full_mask


def _cache_rows(cache, index: torch.Tensor):
    """A new cache holding rows ``index`` of ``cache`` (copies; the source is left intact)."""
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=[(layer.keys.index_select(0, index), layer.values.index_select(0, index))
                                        for layer in cache.layers])  # fmt: skip


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


class _TrieConstraint:
    """Logits processor: only tokens that keep the answer inside the trie; EOS at a leaf."""

    def __init__(self, trie: AnswerTrie, prompt_len: int, eos_token_id: int) -> None:
        self.trie = trie
        self.prompt_len = prompt_len
        self.eos = eos_token_id

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        mask = torch.full_like(scores, float("-inf"))
        for row, generated in enumerate(input_ids[:, self.prompt_len :].tolist()):
            allowed = self.trie.allowed(generated)
            # None: the row already ended (EOS, then padding); [] : a complete answer
            mask[row, allowed if allowed else [self.eos]] = 0.0
        return scores + mask
