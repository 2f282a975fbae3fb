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
        options: dict = {"max_new_tokens": self.config.max_new_tokens}
        if constrained:
            # the constraint ends every answer with the tokenizer's EOS; free text keeps the
            # model's own end-of-turn tokens (its generation config)
            options = {"max_new_tokens": self.trie.max_len + 1, "eos_token_id": eos,
                       "logits_processor": LogitsProcessorList([_TrieConstraint(self.trie, prompt_len, eos)])}  # fmt: skip
        out = self.model.generate(**inputs, do_sample=False, pad_token_id=self.tokenizer.pad_token_id, **options)
        return self.tokenizer.batch_decode(out[:, prompt_len:], skip_special_tokens=True)

    # -- scored readout -----------------------------------------------------------------------

    @torch.inference_mode()
    def score(self, requests: list[MllmRequest]) -> list[ScoredAnswer]:
        """Field distributions per request (list in, list out, same order).

        Every step is batched over the requests: the prompt pass, each level of each slot's
        trie walk (all rows' frontier paths in one forward on gathered cache rows), and the
        step that feeds each row its most likely value before the next slot.
        """
        inputs = self._inputs(requests)
        mask = inputs["attention_mask"]
        out = self.model(**inputs, position_ids=(mask.cumsum(-1) - 1).clamp(min=0), use_cache=True)
        cache, logprobs = out.past_key_values, out.logits[:, -1].float().log_softmax(-1)
        nodes = [self.trie.root] * len(requests)
        dists: list[dict[str, dict]] = [{} for _ in requests]
        for k, slot in enumerate(SLOTS):
            walked = self._slot(cache, mask, logprobs, nodes, slot)
            for row, (dist, _) in enumerate(walked):
                dists[row][slot] = dist
            if k + 1 < len(SLOTS):
                # the next field is read in the context of this one's most likely value
                paths = [path for _, path in walked]
                for row, path in enumerate(paths):
                    for token in path:
                        nodes[row] = nodes[row].children[token]
                logprobs, cache, mask = self._extend(cache, mask, logprobs, paths)
        return [
            ScoredAnswer(
                age=np.array([d["age"].get(a, 0.0) for a in AGES]),
                p_female=float(d["gender"].get("female", 0.0)),
                expression=np.array([d["expression"].get(e, 0.0) for e in EXPRESSIONS]),
            )
            for d in dists
        ]

    def _slot(self, cache, mask, logprobs: torch.Tensor, starts: list[Node], slot: str) -> list[tuple[dict, list[int]]]:
        """Breadth-first walk below each row's node until every path fixes the slot's value.

        Returns per row the normalised distribution over values and the token path to the
        most likely value's node. Paths are scored by the unconstrained model and
        renormalised over the valid answers.
        """
        rows = range(len(starts))
        per_value: list[dict] = [defaultdict(list) for _ in rows]
        best: list[dict] = [{} for _ in rows]
        frontier = [[] if n.determined(slot) else [(n, [], 0.0)] for n in starts]
        level = [logprobs[r : r + 1] for r in rows]
        while any(frontier):
            nxt: list[list] = [[] for _ in rows]
            for r in rows:
                for (node, path, lp), row_logprobs in zip(frontier[r], level[r]):
                    for token, child in node.children.items():
                        clp = lp + float(row_logprobs[token])
                        if child.determined(slot):
                            value = child.value(slot)
                            per_value[r][value].append(clp)
                            if value not in best[r] or clp > best[r][value][0]:
                                best[r][value] = (clp, path + [token])
                        else:
                            nxt[r].append((child, path + [token], clp))
            frontier = nxt
            flat = [(r, path) for r in rows for _, path, _ in frontier[r]]
            if flat:
                out = self._extend_many(cache, mask, [r for r, _ in flat], [p for _, p in flat])
                sizes = [len(f) for f in frontier]
                level = list(torch.split(out, sizes))
        results = []
        for r, start in enumerate(starts):
            if start.determined(slot):
                results.append(({start.value(slot): 1.0}, []))
                continue
            totals = {v: _logsumexp(lps) for v, lps in per_value[r].items()}
            norm = _logsumexp(list(totals.values()))
            dist = {v: math.exp(t - norm) for v, t in totals.items()}
            results.append((dist, best[r][max(dist, key=dist.get)][1]))
        return results

    def _forward(self, cache, mask: torch.Tensor, ids: torch.Tensor, new_mask: torch.Tensor):
        """Feed ``ids`` (masked by ``new_mask``) after ``cache``; positions skip masked slots."""
        full_mask = torch.cat([mask, new_mask], 1)
        positions = (full_mask.cumsum(-1)[:, -ids.shape[1] :] - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=full_mask, position_ids=positions, past_key_values=cache, use_cache=True)
        return out, full_mask

    def _extend_many(self, cache, mask: torch.Tensor, rows: list[int], paths: list[list[int]]) -> torch.Tensor:
        """Log-probabilities after each equal-length path, each on a copy of its row's cache."""
        index = torch.tensor(rows, device=self.device)
        ids = torch.tensor(paths, device=self.device)
        out, _ = self._forward(_cache_rows(cache, index), mask[index], ids, torch.ones_like(ids, dtype=mask.dtype))
        return out.logits[:, -1].float().log_softmax(-1)

    def _extend(self, cache, mask: torch.Tensor, logprobs: torch.Tensor, paths: list[list[int]]):
        """Feed each row its own path (in place; ragged paths are right-padded and masked).

        Returns the log-probabilities after each row's last real token, the cache and the mask.
        """
        width = max(len(p) for p in paths)
        if width == 0:
            return logprobs, cache, mask
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([p + [pad] * (width - len(p)) for p in paths], device=self.device)
        new_mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in paths], dtype=mask.dtype, device=self.device)
        out, full_mask = self._forward(cache, mask, ids, new_mask)
        step = out.logits.float().log_softmax(-1)
        rows = [step[r, len(p) - 1] if p else logprobs[r] for r, p in enumerate(paths)]
        return torch.stack(rows), out.past_key_values, full_mask


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
