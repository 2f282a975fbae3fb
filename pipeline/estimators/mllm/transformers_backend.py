"""MLLM backend on transformers: any ``AutoModelForImageTextToText`` by hub id or local path.

Batches are left-padded. Three ways to answer:

- ``generate(constrained=False)``: free greedy generation (temperature 0) by the model's own
  ``generate``;
- ``generate(constrained=True)``: greedy decoding inside the answer trie. After the prefill,
  each step picks every row's most likely allowed token and then feeds it together with the
  chain of tokens the trie forces after it (``, "gender": "``...), all rows in one forward:
  a handful of forwards per answer, one device-to-host copy per step;
- ``score``: one prefill, then per field one forward of every node of the trie below each row
  (a tree over the shared prompt cache, see :mod:`.context`): the probability of each value
  sums its token paths, the next field is read after the most likely value.

Requests the processor cannot take, and batches the GPU has no memory for (split in halves
until they fit, then the request alone), come back as :class:`BackendFailure` in their slot.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from ...config import TransformersBackendConfig
from ...errors import ModelError
from ...types import EXPRESSIONS
from .base import BackendFailure, MllmBackend, MllmRequest, ScoredAnswer
from .context import Engine, PromptState
from .loading import check_adapter, load_adapter, load_model, load_processor
from .schema import AGES
from .trie import SLOTS, AnswerTrie, Node, encoder_in_context

__all__ = ["TransformersBackend", "image_options", "render_prompt"]

log = logging.getLogger(__name__)


def render_prompt(processor, messages: list[dict]) -> str:
    """The chat rendered by the checkpoint's template, generation prompt included.

    A template without a system role (it raises on one) gets the system text at the start of
    the first user turn; a processor whose own rendering needs parts it lacks here (a video
    processor) renders with the same template through its tokenizer.
    """
    from jinja2 import TemplateError

    def render(msgs: list[dict]) -> str:
        try:
            return processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        except AttributeError:
            template = processor.chat_template or processor.tokenizer.chat_template
            return processor.tokenizer.apply_chat_template(msgs, chat_template=template, add_generation_prompt=True, tokenize=False)

    try:
        return render(messages)
    except TemplateError:
        if not messages or messages[0]["role"] != "system":
            raise
        return render(_fold_system(messages))


def _fold_system(messages: list[dict]) -> list[dict]:
    system = " ".join(p["text"] for p in messages[0]["content"] if p["type"] == "text")
    first, rest = messages[1], messages[2:]
    content = [p if p["type"] != "text" else {**p, "text": f"{system}\n\n{p['text']}"} for p in first["content"]]
    return [{**first, "content": content}, *rest]


def image_options(processor, config: TransformersBackendConfig) -> dict:
    """Processor options that bound the image tokens of a crop (``max_image_pixels``,
    ``image_splitting``): never above the checkpoint's own limits."""
    images = processor.image_processor
    options = {}
    cap = config.max_image_pixels
    size = getattr(images, "size", None)
    longest, shortest = _size_field(size, "longest_edge"), _size_field(size, "shortest_edge")
    if cap and hasattr(images, "merge_size") and longest:
        # Qwen-VL: ``size`` holds pixel counts, the fewest and the most an image may keep
        options["size"] = {"shortest_edge": min(shortest or 0, cap), "longest_edge": min(longest, cap)}
    if hasattr(images, "do_image_splitting"):
        options["do_image_splitting"] = config.image_splitting
    if hasattr(images, "do_pan_and_scan"):
        options["do_pan_and_scan"] = config.image_splitting
    return options


class _OutOfMemory(Exception):
    pass


class TransformersBackend(MllmBackend):
    """See the module docstring. Weights load once, on construction, then a warm-up runs.

    Attributes:
        healthy: False once the device failed in a way a retry cannot mend (not an OOM).
    """

    def __init__(self, config: TransformersBackendConfig, loaded: tuple | None = None) -> None:
        """``loaded``: ``(model, processor)`` already in memory (benchmarks build random models
        on the GPU); by default they load from ``config.model``."""
        self.config = config
        self.device = torch.device(config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
        if loaded is None:
            if config.adapter is not None:
                check_adapter(config.adapter)  # before minutes of loading the base model
            self.processor = load_processor(config.model, config.local_files_only)
            self.model = load_model(config.model, config.dtype, self.device, config.local_files_only)
            if config.adapter is not None:
                self.model = load_adapter(self.model, config.adapter, config.local_files_only)
        else:
            self.model, self.processor = loaded
        self.dtype = self.model.dtype
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model_id = config.model_id or str(config.model) + (f"+{config.adapter}" if config.adapter else "")
        self.engine_problem = Engine.problem(self.model)
        self.engine = Engine(self.model) if self.engine_problem is None else None
        self.healthy = True
        context = render_prompt(self.processor, [{"role": "user", "content": [{"type": "text", "text": "?"}]}])
        self.trie = AnswerTrie(encoder_in_context(lambda t: self.tokenizer(t, add_special_tokens=False)["input_ids"], context))
        self._image_options = image_options(self.processor, config)

    def start(self) -> None:
        if self.config.warmup:
            self._warmup()

    def check_health(self) -> None:
        if not self.healthy:
            raise RuntimeError(f"MLLM {self.model_id!r} can no longer run on its device ({self.device})")

    def check_mode(self, mode: str) -> None:
        """Raise :class:`ModelError` when ``mode`` cannot run on this model (see
        :meth:`Engine.problem`); free text runs on every model."""
        if mode != "free" and self.engine_problem is not None:
            raise ModelError(f"MLLM {self.model_id!r} cannot answer in {mode} mode: {self.engine_problem}; use mode free")

    def _warmup(self) -> None:
        from .prompts import load_prompt

        blank = np.full((64, 64, 3), 128, np.uint8)
        request = MllmRequest(load_prompt("person-v1").messages(True, False), [blank])
        answer = self.generate([request], constrained=self.engine is not None)[0]
        if isinstance(answer, BackendFailure):
            raise ModelError(f"MLLM {self.model_id!r} cannot answer a warm-up request: {answer.reason}")

    # -- inputs -------------------------------------------------------------------------------

    def _inputs(self, requests: list[MllmRequest]) -> dict:
        """The processor's tensors on the device (pixel values in the model's dtype)."""
        return self._to_device(self._prepare(requests))

    def _prepare(self, requests: list[MllmRequest]) -> dict:
        """The processor's work, on the CPU: prompts rendered, images turned into tensors."""
        from PIL import Image

        texts = [render_prompt(self.processor, r.messages) for r in requests]
        images = [[Image.fromarray(np.ascontiguousarray(im)) for im in r.images] for r in requests]
        batch = self.processor(text=texts, images=images, padding=True, return_tensors="pt", **self._image_options)
        return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}

    def _to_device(self, batch: dict) -> dict:
        batch = {k: v.to(self.device) for k, v in batch.items()}
        for key in ("pixel_values", "pixel_values_videos"):
            if key in batch:
                batch[key] = batch[key].to(self.dtype)
        return batch

    def _run(self, requests: list[MllmRequest], answer) -> list:
        """``answer(requests, inputs)`` for the batch; per request when the processor refuses
        the batch (to find the request it cannot take), in halves when the device runs out of
        memory. Failures come back as :class:`BackendFailure` in their slots."""
        try:
            prepared = self._prepare(requests)
        except Exception as err:  # noqa: BLE001 (image processors raise anything on odd images: ZeroDivisionError too)
            if len(requests) > 1:
                return [out for r in requests for out in self._run([r], answer)]
            return [BackendFailure(f"the processor cannot take this request: {_first_line(err)}")]
        try:
            return self._guard(lambda: answer(requests, self._to_device(prepared)))
        except _OutOfMemory:
            pass
        # Out of the except block: the failed attempt's frames (its cache and activations, held
        # by the exception's traceback) are gone before the halves run.
        prepared = None
        _free_cuda()
        if len(requests) == 1:
            return [BackendFailure("out of device memory for a single request")]
        half = len(requests) // 2
        log.warning("MLLM batch of %d ran out of device memory; retrying in halves", len(requests))
        return self._run(requests[:half], answer) + self._run(requests[half:], answer)

    def _guard(self, call):
        """Run ``call()``; an out-of-memory on the device becomes :class:`_OutOfMemory`, other
        device errors mark the backend unhealthy."""
        try:
            return call()
        except torch.OutOfMemoryError:
            raise _OutOfMemory() from None
        except RuntimeError as err:
            text = str(err)
            if "out of memory" in text or "CUBLAS_STATUS_ALLOC_FAILED" in text:
                raise _OutOfMemory() from None
            if "CUDA" in text or "device-side" in text:
                self.healthy = False
            raise

    # -- generation ---------------------------------------------------------------------------

    def generate(self, requests: list[MllmRequest], constrained: bool) -> list[str | BackendFailure]:
        """Greedy answers, one per request (list in, list out, same order)."""
        if constrained:
            self.check_mode("constrained")
            return self._run(requests, lambda reqs, inputs: self._constrained(inputs))
        return self._run(requests, lambda reqs, inputs: self._free(inputs))

    @torch.inference_mode()
    def _free(self, inputs: dict) -> list[str]:
        prompt_len = inputs["input_ids"].shape[1]
        out = self.model.generate(**inputs, do_sample=False, max_new_tokens=self.config.max_new_tokens,
                                  pad_token_id=self.tokenizer.pad_token_id)  # fmt: skip
        return self.tokenizer.batch_decode(out[:, prompt_len:], skip_special_tokens=True)

    @torch.inference_mode()
    def _constrained(self, inputs: dict) -> list[str]:
        state = self.engine.prefill(inputs)
        rows = range(len(state.next_pos))
        nodes = [self.trie.root] * len(rows)
        written: list[list[int]] = [[] for _ in rows]
        logits = state.last_logits
        while True:
            live = [r for r in rows if nodes[r].children]
            if not live:
                break
            choices = _choose(logits, [list(nodes[r].children) if r in live else [] for r in rows])
            feeds = [[] for _ in rows]
            for r in live:
                node = nodes[r]
                token = choices[r]
                while True:  # the chosen token, then every token the trie forces after it
                    feeds[r].append(token)
                    node = node.children[token]
                    if len(node.children) != 1 or node.leaf:
                        break
                    (token,) = node.children
                nodes[r] = node
                written[r] += feeds[r]
            if not any(nodes[r].children for r in rows):
                break
            logits = self._feed_chains(state, feeds)
        return self.tokenizer.batch_decode(written, skip_special_tokens=True)

    def _feed_chains(self, state: PromptState, chains: list[list[int]]) -> torch.Tensor:
        """Feed each row its chain, right-aligned (padded in front with tokens no real token
        sees), and commit it; returns the logits after each row's last token ``(B, V)``, the
        only ones the model computes."""
        width = max(len(c) for c in chains)
        pad = self.tokenizer.pad_token_id
        tokens = torch.tensor([[pad] * (width - len(c)) + c for c in chains])
        parents = [[i - 1 if i > width - len(c) else -1 for i in range(width)] for c in chains]
        logits = self.engine.feed(state, tokens, parents, last_only=True)
        self.engine.commit(state, [list(range(width - len(c), width)) for c in chains], width)
        return logits[:, -1]

    # -- scored readout -----------------------------------------------------------------------

    def score(self, requests: list[MllmRequest]) -> list[ScoredAnswer | BackendFailure]:
        """Field distributions per request (list in, list out, same order)."""
        self.check_mode("scored")
        return self._run(requests, lambda reqs, inputs: self._score(inputs))

    @torch.inference_mode()
    def _score(self, inputs: dict) -> list[ScoredAnswer]:
        state = self.engine.prefill(inputs)
        rows = range(len(state.next_pos))
        walks = [_Walk(self.trie.root, None) for _ in rows]
        dists: list[dict] = [{} for _ in rows]
        for slot in SLOTS:
            for walk in walks:
                walk.expand(slot)
            logprobs = self._tree_logprobs(state, walks)
            chosen = []
            for r, walk in enumerate(walks):
                dists[r][slot] = walk.distribution(logprobs[r], slot)
                chosen.append(walk.advance(slot))
            width = max(len(w.fed) for w in walks)
            if width:
                self.engine.commit(state, chosen, width)
        return [
            ScoredAnswer(
                age=np.array([d["age"].get(a, 0.0) for a in AGES]),
                p_female=float(d["gender"].get("female", 0.0)),
                expression=np.array([d["expression"].get(e, 0.0) for e in EXPRESSIONS]),
            )
            for d in dists
        ]

    def _tree_logprobs(self, state: PromptState, walks: list[_Walk]) -> list[list[dict]]:
        """Feed every row's tree (one forward for the batch), then read at each node of each
        walk the log-probabilities of its children's tokens (one device-to-host copy)."""
        width = max(len(w.fed) for w in walks)
        logits = None
        if width:
            pad = self.tokenizer.pad_token_id
            tokens = torch.tensor([[t for t, _ in w.fed] + [pad] * (width - len(w.fed)) for w in walks])
            parents = [[p for _, p in w.fed] + [-1] * (width - len(w.fed)) for w in walks]
            logits = self.engine.feed(state, tokens, parents)
        prompt_end = state.last_logits.log_softmax(-1)
        rows, items, tokens, where = [], [], [], []
        for r, walk in enumerate(walks):
            for i, node in enumerate(walk.nodes):
                for token in node.children:
                    rows.append(r)
                    items.append(walk.item(i))
                    tokens.append(token)
                    where.append((r, i, token))
        out: list[list[dict]] = [[{} for _ in w.nodes] for w in walks]
        if not where:
            return out
        device = prompt_end.device
        rows_t, items_t, tokens_t = (torch.tensor(x, device=device) for x in (rows, items, tokens))
        values = prompt_end[rows_t, tokens_t]
        if logits is not None:  # log-softmax at the gathered entries only (no (B, T, V) log-softmax copy)
            at = items_t.clamp(min=0)
            fed = logits[rows_t, at, tokens_t] - logits.logsumexp(-1)[rows_t, at]
            values = torch.where(items_t >= 0, fed, values)
        for (r, i, token), lp in zip(where, values.tolist()):
            out[r][i][token] = lp
        return out


class _Walk:
    """One row's trie walk over one slot: the nodes whose children's probabilities the slot
    needs, and what is fed for them.

    ``nodes[0]`` is where the row stands (its token ``pending`` not yet in the cache, or None
    at the root, whose logits end the prompt); ``nodes[1:]`` are the nodes below it that do
    not fix the slot's value yet, breadth first, each with its parent's index. ``fed`` is the
    feed that gives their logits: the pending token first (when there is one), then each
    node's token under its parent's feed index.
    """

    def __init__(self, start: Node, pending: int | None) -> None:
        self.start, self.pending = start, pending
        self.nodes: list[Node] = []
        self.tokens: list[int | None] = []
        self.parents: list[int] = []
        self.fed: list[tuple[int, int]] = []
        self._choice: tuple[list[int], Node, int] | None = None

    def item(self, i: int) -> int:
        """The feed index whose logits follow node ``i`` (-1: the prompt's last logits)."""
        offset = 0 if self.pending is None else 1
        return i - 1 + offset if i else offset - 1

    def expand(self, slot: str) -> None:
        self.nodes, self.tokens, self.parents, self.fed = [self.start], [self.pending], [-1], []
        if self.start.determined(slot):
            return
        if self.pending is not None:
            self.fed.append((self.pending, -1))
        i = 0
        while i < len(self.nodes):
            for token, child in self.nodes[i].children.items():
                if not child.determined(slot):
                    self.nodes.append(child)
                    self.tokens.append(token)
                    self.parents.append(i)
                    self.fed.append((token, self.item(i)))
            i += 1

    def distribution(self, logprobs: list[dict], slot: str) -> dict:
        """The slot's normalised value distribution; remembers the way to the most likely
        value's most likely node for :meth:`advance`."""
        if self.start.determined(slot):
            self._choice = None
            return {self.start.value(slot): 1.0}
        path_lp = [0.0] * len(self.nodes)
        for i in range(1, len(self.nodes)):
            path_lp[i] = path_lp[self.parents[i]] + logprobs[self.parents[i]][self.tokens[i]]
        totals: dict = {}
        best: dict = {}
        for i, node in enumerate(self.nodes):
            for token, child in node.children.items():
                if child.determined(slot):
                    lp = path_lp[i] + logprobs[i][token]
                    value = child.value(slot)
                    totals.setdefault(value, []).append(lp)
                    if value not in best or lp > best[value][0]:
                        best[value] = (lp, i, token, child)
        sums = {v: _logsumexp(lps) for v, lps in totals.items()}
        norm = _logsumexp(list(sums.values()))
        dist = {v: math.exp(t - norm) for v, t in sums.items()}
        _, i, token, child = best[max(dist, key=dist.get)]
        path = []
        while i >= 0:
            path.append(i)
            i = self.parents[i]
        self._choice = (path[::-1], child, token)
        return dist

    def advance(self, slot: str) -> list[int]:
        """Move to the chosen value's node; returns the feed indices to commit (the path)."""
        if self._choice is None:
            return []
        path, child, token = self._choice
        committed = [self.item(i) for i in path if self.item(i) >= 0]
        self.start, self.pending = child, token
        return committed


def _size_field(size, name: str):
    """A field of an image processor's ``size`` (a dict, or transformers' ``SizeDict``)."""
    return size.get(name) if isinstance(size, dict) else getattr(size, name, None)


def _choose(logits: torch.Tensor, allowed: list[list[int]]) -> list[int]:
    """Per row, the allowed token with the highest logit (rows with none: -1); one sync."""
    width = max((len(a) for a in allowed), default=0)
    ids = torch.tensor([a + [a[0] if a else 0] * (width - len(a)) for a in allowed], device=logits.device)
    picked = logits.gather(1, ids).argmax(1)
    chosen = ids.gather(1, picked[:, None])[:, 0].tolist()
    return [c if a else -1 for c, a in zip(chosen, allowed)]


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _free_cuda() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
