"""Training examples for the MLLM, built exactly as inference asks: the same crops, the same
versioned prompt rendered by the checkpoint's own chat template and processor, and as target
the canonical answer in the tokens the answer trie holds after that prompt.

The loss covers the answer's tokens and the end-of-turn token after them: never the prompt
or the image tokens. A row without a label for a field still trains the others: the field
gets a stand-in value so the answer stays well-formed, and the tokens that spell that value
(found by their character spans in the answer) carry no loss.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from ..estimators.mllm.base import MllmRequest
from ..estimators.mllm.prompts import Prompt
from ..estimators.mllm.schema import answer_text
from ..estimators.mllm.transformers_backend import render_prompt
from ..evaluation.manifest import Sample
from ..types import Crop

__all__ = ["IGNORE", "Encoder", "Example", "TrainBatch", "answer_age", "value_spans"]

#: The label of a position that carries no loss (PyTorch's ``cross_entropy`` default).
IGNORE = -100
#: Stand-ins for a missing gender or expression label (their tokens carry no loss).
_STAND_IN = {"gender": "female", "expression": "neutral"}


def answer_age(age: float) -> int:
    """A labelled age as the answer schema writes it: whole years, 0-100 (older is 100)."""
    return int(min(100, max(0, round(age))))


@dataclass(frozen=True)
class Example:
    """One training row: the crop and the labels it has (None: not labelled)."""

    crop: Crop
    age: int | None
    gender: str | None
    expression: str | None

    @classmethod
    def of(cls, crop: Crop, sample: Sample) -> Example:
        age = None if sample.age is None else answer_age(sample.age)
        return cls(crop, age, sample.gender, sample.expression)


def value_spans(answer: str) -> dict[str, tuple[int, int]]:
    """The character span of each field's value in a canonical answer (a string's quotes
    left out: a token overlapping the span belongs to the value, so one that merges a quote
    with the value's first letters counts, and the bare quotes do not)."""
    data = json.loads(answer)
    spans = {}
    for field in ("age", "gender", "expression"):
        key = f'"{field}": '
        start = answer.index(key) + len(key)
        quote = int(isinstance(data[field], str))
        spans[field] = (start + quote, start + quote + len(str(data[field])))
    return spans


@dataclass
class TrainBatch:
    """Model inputs for a batch (left-padded: every answer ends in the last column) and the
    labels of its last ``labels.shape[1]`` tokens.

    Attributes:
        inputs: the processor's tensors with the answers appended (``input_ids``,
            ``attention_mask``, pixel values and whatever else the family takes).
        labels: ``(B, A)`` token ids of the last ``A`` columns, :data:`IGNORE` where no loss.
        tokens: positions that carry loss.
    """

    inputs: dict
    labels: torch.Tensor

    @property
    def tokens(self) -> int:
        return int((self.labels != IGNORE).sum())

    def to(self, device, dtype) -> TrainBatch:
        inputs = {k: v.to(device) for k, v in self.inputs.items()}
        for key in ("pixel_values", "pixel_values_videos"):
            if key in inputs:
                inputs[key] = inputs[key].to(dtype)
        return TrainBatch(inputs, self.labels.to(device))


class Encoder:
    """Examples to :class:`TrainBatch` for one model and prompt.

    Args:
        processor: the checkpoint's processor (as :func:`~..estimators.mllm.loading.load_processor`
            gives it).
        prompt: the versioned prompt inference uses.
        end_ids: the token(s) that end the model's turn, trained after each answer.
        image_options: the processor options inference passes (the image budget).
        stand_in_age: the age written where a row has none (no loss on it).
    """

    def __init__(self, processor, prompt: Prompt, end_ids: list[int], image_options: dict, stand_in_age: int = 30) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.prompt = prompt
        self.end_ids = list(end_ids)
        self.image_options = image_options
        self.stand_in_age = stand_in_age
        self._contexts: dict[tuple[bool, bool], tuple[str, list[int], str]] = {}

    def request(self, crop: Crop) -> MllmRequest:
        """The inference request for ``crop`` (the estimator's own form)."""
        images = [im for im in (crop.face, crop.body) if im is not None]
        return MllmRequest(self.prompt.messages(crop.face is not None, crop.body is not None), images)

    def _context(self, has_face: bool, has_body: bool) -> tuple[str, list[int], str]:
        """The rendered prompt, its text tokens, and what the checkpoint's template writes
        between the generation prompt and the answer ('' or ' ')."""
        key = (has_face, has_body)
        if key not in self._contexts:
            messages = self.prompt.messages(has_face, has_body)
            text = render_prompt(self.processor, messages)
            self._contexts[key] = (text, self._tokenize(text), self._gap(messages, text))
        return self._contexts[key]

    def _tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _gap(self, messages: list[dict], prompt_text: str) -> str:
        """'' or ' ': how the checkpoint's template joins an assistant turn to the prompt
        (both forms are in the answer trie when the prompt ends in a non-space; train the
        template's own, so free-text answers look like the chats the model saw)."""
        probe = '{"age": 1}'
        turn = {"role": "assistant", "content": [{"type": "text", "text": probe}]}
        try:
            whole = self.processor.apply_chat_template([*messages, turn], tokenize=False, add_generation_prompt=False)
        except Exception:  # noqa: BLE001 (a template without an assistant turn, or one that wants other parts)
            return ""
        if whole.startswith(prompt_text) and whole[len(prompt_text) :].startswith(" " + probe) and not prompt_text[-1:].isspace():
            return " "
        return ""

    def answer(self, example: Example) -> tuple[list[int], list[bool]]:
        """The target tokens after the prompt (answer, then the end of turn) and whether each
        carries loss."""
        crop = example.crop
        text, base, gap = self._context(crop.face is not None, crop.body is not None)
        values = {
            "age": self.stand_in_age if example.age is None else example.age,
            "gender": example.gender or _STAND_IN["gender"],
            "expression": example.expression or _STAND_IN["expression"],
        }
        answer = answer_text(values["age"], values["gender"], values["expression"])
        ids = self._tokenize(text + gap + answer)
        if ids[: len(base)] != base or len(ids) == len(base):
            raise ValueError(f"the answer {answer!r} cannot follow the prompt's last tokens")
        ids = ids[len(base) :]
        missing = [field for field in ("age", "gender", "expression") if getattr(example, field) is None]
        trained = self._trained(ids, gap + answer, len(gap), missing)
        return ids + self.end_ids, trained + [True] * len(self.end_ids)

    def _trained(self, ids: list[int], written: str, offset: int, missing: list[str]) -> list[bool]:
        """Per answer token: False when its characters overlap the value of a missing field."""
        if not missing:
            return [True] * len(ids)
        spans = value_spans(written[offset:])
        full = self.tokenizer.decode(ids)
        start = full.find(written[offset:])
        if start < 0:
            raise ValueError(f"the answer tokens do not decode to {written[offset:]!r}")
        ends = [len(self.tokenizer.decode(ids[: k + 1])) - start for k in range(len(ids))]
        out = []
        for k, end in enumerate(ends):
            begin = ends[k - 1] if k else -start
            out.append(not any(begin < spans[f][1] and end > spans[f][0] for f in missing))
        return out

    def batch(self, examples: list[Example]) -> TrainBatch:
        """The batch's tensors: the processor's prompt tensors, each row's answer appended,
        left-padded again so that every answer ends in the last column."""
        from PIL import Image

        requests = [self.request(e.crop) for e in examples]
        texts = [self._context(e.crop.face is not None, e.crop.body is not None)[0] for e in examples]
        images = [[Image.fromarray(np.ascontiguousarray(im)) for im in r.images] for r in requests]
        out = self.processor(text=texts, images=images, padding=True, return_tensors="pt", **self.image_options)
        out = {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}
        ids, mask = out["input_ids"], out["attention_mask"].bool()
        per_token = [k for k, v in out.items() if k not in ("input_ids", "attention_mask") and v.shape == ids.shape]
        answers = [self.answer(e) for e in examples]
        lengths = [int(m.sum()) + len(a) for m, (a, _) in zip(mask, answers)]
        width, tail = max(lengths), max(len(a) for a, _ in answers)
        rows = len(examples)
        new_ids = torch.full((rows, width), self.tokenizer.pad_token_id, dtype=ids.dtype)
        new_mask = torch.zeros((rows, width), dtype=out["attention_mask"].dtype)
        extra = {k: torch.zeros((rows, width), dtype=out[k].dtype) for k in per_token}
        labels = torch.full((rows, tail), IGNORE, dtype=torch.long)
        for r, (answer, trained) in enumerate(answers):
            real = mask[r]
            row = torch.cat([ids[r][real], torch.tensor(answer, dtype=ids.dtype)])
            new_ids[r, width - len(row) :] = row
            new_mask[r, width - len(row) :] = 1
            for k in per_token:
                extra[k][r, width - len(row) : width - len(answer)] = out[k][r][real]
            labels[r, tail - len(answer) :] = torch.tensor([t if keep else IGNORE for t, keep in zip(answer, trained)])
        inputs = {**out, "input_ids": new_ids, "attention_mask": new_mask, **extra}
        return TrainBatch(inputs, labels)
