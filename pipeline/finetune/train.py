"""The training loop of ``tracklens finetune``: what is trained (LoRA adapters or the whole
model), the optimizer and its schedule, and checkpoints a stopped run resumes from exactly.

The forward is the one inference runs (:class:`~..estimators.mllm.context.Engine`'s
positions, left padding, the model's own ``forward``), so a trained model answers in
``analyze``, ``eval`` and the service as it did here. Only the logits of the answer tokens
are computed (``logits_to_keep``): a 150k-token vocabulary over a 700-token prompt would
otherwise cost more memory than the model's activations.

A checkpoint holds the trained parameters, the optimizer's state, the random generator's state
and the step; the learning rate is a function of the step (linear warm-up, cosine decay to 0)
and the row order a function of the seed and the epoch, so a resumed run continues the
uninterrupted one exactly (on a CPU, bit for bit).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..config import FinetuneConfig
from ..errors import ConfigError, InputError
from ..estimators.mllm.context import Engine
from ..estimators.mllm.loading import quiet_peft
from .data import Encoder, Example, TrainBatch

__all__ = ["CHECKPOINTS", "Trainer", "lora_targets", "prepare_model"]

log = logging.getLogger(__name__)

#: Submodule names of a VLM's vision tower and of the projector into the language model, in
#: the families transformers has (LLaVA, LLaVA-Next/OneVision, Qwen2/2.5/3-VL, Gemma 3,
#: Idefics3/SmolVLM, PaliGemma, Mistral 3, InternVL).
VISION_PARTS = frozenset({"vision_tower", "visual", "vision_model", "vision_encoder", "image_encoder"})
PROJECTOR_PARTS = frozenset({"multi_modal_projector", "mm_projector", "connector", "merger"})
#: The folder of a run's checkpoints.
CHECKPOINTS = "checkpoints"


def _parts(name: str) -> set[str]:
    return set(name.split("."))


def lora_targets(model, cfg: FinetuneConfig) -> list[str]:
    """The full names of the linear layers that get adapters: the language model's layers named
    in ``cfg.lora.target_modules``, with ``cfg.lora.projector`` every linear layer of the projector, and with
    ``tune_vision`` every linear layer of the vision tower; never the output layer.

    Raises:
        ConfigError: no layer matches.
    """
    head = model.get_output_embeddings()
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or module is head:
            continue
        parts = _parts(name)
        if (parts & PROJECTOR_PARTS and cfg.lora.projector) or (parts & VISION_PARTS and cfg.tune_vision):
            names.append(name)
        elif not parts & VISION_PARTS and name.rsplit(".", 1)[-1] in cfg.lora.target_modules:
            names.append(name)
    if not any(not _parts(n) & (VISION_PARTS | PROJECTOR_PARTS) for n in names):
        raise ConfigError(f"finetune.lora.target_modules {cfg.lora.target_modules} names no linear layer of the model's "
                          "language model")  # fmt: skip
    return names


def prepare_model(model, cfg: FinetuneConfig):
    """Make ``model`` trainable as ``cfg`` says, in place: LoRA adapters injected (returns the
    ``peft`` model that saves them), or its parameters unfrozen, the vision tower's only with
    ``tune_vision`` (returns None). The model's own ``forward`` then trains what is trainable."""
    if cfg.method == "lora":
        import peft

        lora = peft.LoraConfig(r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                               target_modules=lora_targets(model, cfg), bias="none")  # fmt: skip
        with quiet_peft():
            return peft.get_peft_model(model, lora)
    for name, param in model.named_parameters():
        param.requires_grad = cfg.tune_vision or not _parts(name) & VISION_PARTS
    return None


def lr_factor(step: int, total: int, warmup_ratio: float) -> float:
    """The learning rate of optimizer step ``step`` (0-based) as a share of the peak: linear
    warm-up over the first ``warmup_ratio`` of the steps, then cosine decay to 0."""
    warmup = math.ceil(warmup_ratio * total)
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


class Trainer:
    """Optimizer steps over the training rows, with checkpoints.

    Args:
        model: the model as :func:`prepare_model` left it (adapters injected).
        encoder: turns examples into batches.
        rows: how many training rows there are.
        example: row index -> its :class:`Example` (the crop cut again from the image); raises
            ``ValueError`` when the row cannot be read any more (it is then skipped).
        cfg: the ``finetune`` section.
        folder: the run folder (checkpoints go in ``folder/checkpoints``, the step log in
            ``folder/train_log.jsonl``).
        fingerprint: what a checkpoint must have been made with to be resumed (config and
            data hashes).
        autocast: the dtype of mixed-precision compute (bfloat16 on a GPU), or None.
    """

    def __init__(
        self, model, encoder: Encoder, rows: int, example: Callable[[int], Example], cfg: FinetuneConfig, folder: Path,
        fingerprint: str, autocast: torch.dtype | None = None,
    ) -> None:  # fmt: skip
        if rows < 1:
            raise InputError("no training rows")
        self.model, self.encoder, self.rows, self.example, self.cfg = model, encoder, rows, example, cfg
        self.folder, self.fingerprint, self.autocast = folder, fingerprint, autocast
        self.device = next(model.parameters()).device
        self.engine = Engine(model)
        self.params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not self.params:
            raise ConfigError("nothing to train: the config leaves every parameter frozen")
        per_step = cfg.batch_size * cfg.grad_accum
        self.total = cfg.max_steps or max(1, math.ceil(cfg.epochs * rows / per_step))
        fused = {"fused": True} if self.device.type == "cuda" else {}
        self.optimizer = torch.optim.AdamW([p for _, p in self.params], lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                           **fused)  # fmt: skip
        self.step = 0
        self.skipped: set[int] = set()
        self._orders: dict[int, np.ndarray] = {}

    # -- data ---------------------------------------------------------------------------------

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng([self.cfg.seed, epoch]).permutation(self.rows)}
        return self._orders[epoch]

    def micro_batch(self, index: int) -> list[int]:
        """The rows of micro-batch ``index``: consecutive positions of the row order, epoch
        after epoch (each epoch shuffled by the seed)."""
        start = index * self.cfg.batch_size
        return [int(self._order(p // self.rows)[p % self.rows]) for p in range(start, start + self.cfg.batch_size)]

    def _examples(self, rows: list[int]) -> list[Example]:
        out = []
        for row in rows:
            try:
                out.append(self.example(row))
            except ValueError as err:
                if row not in self.skipped:
                    self.skipped.add(row)
                    log.warning("training row skipped: %s", err)
        return out

    # -- one step -----------------------------------------------------------------------------

    def _loss(self, batch: TrainBatch, tokens: int) -> torch.Tensor:
        """The batch's summed token loss over ``tokens`` (the step's loss-carrying tokens)."""
        batch = batch.to(self.device, self.model.dtype)
        tail = batch.labels.shape[1]
        positions = self.engine.prompt_positions(batch.inputs)
        keep = {"logits_to_keep": tail + 1} if self.engine.keeps_logits else {}
        with torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            out = self.model(**batch.inputs, position_ids=positions, use_cache=False, **keep)
        logits = out.logits[:, -(tail + 1) : -1].float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.labels.reshape(-1), reduction="sum")
        return loss / tokens

    def train_step(self) -> tuple[float, int]:
        """One optimizer step; returns the mean token loss and the rows it saw."""
        cfg = self.cfg
        micro = [self._examples(self.micro_batch(self.step * cfg.grad_accum + k)) for k in range(cfg.grad_accum)]
        batches = [self.encoder.batch(examples) for examples in micro if examples]
        tokens = sum(b.tokens for b in batches)
        if not tokens:
            raise InputError("no training row of this step can be read any more")
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.learning_rate * lr_factor(self.step, self.total, cfg.warmup_ratio)
        total = 0.0
        for batch in batches:
            loss = self._loss(batch, tokens)
            loss.backward()
            total += float(loss.detach())
        if cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_([p for _, p in self.params], cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return total, sum(len(m) for m in micro)

    # -- the run ------------------------------------------------------------------------------

    def run(self, stop, progress: bool = True) -> bool:
        """Train to the last step; returns True when it got there, False when ``stop`` (a
        ``threading.Event``) was set first. Either way the last step done is checkpointed."""
        import sys

        from tqdm import tqdm

        self.model.train()
        logged = self.folder / "train_log.jsonl"
        bar = tqdm(total=self.total, initial=self.step, unit="step", desc="finetune", disable=None if progress else True,
                   file=sys.stderr, dynamic_ncols=True)  # fmt: skip
        saved = self.step
        try:
            while self.step < self.total and not stop.is_set():
                start = time.perf_counter()
                loss, seen = self.train_step()
                seconds = time.perf_counter() - start
                lr = self.optimizer.param_groups[0]["lr"]
                with open(logged, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"step": self.step, "loss": round(loss, 6), "lr": lr, "rows": seen,
                                         "seconds": round(seconds, 4)}) + "\n")  # fmt: skip
                bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{seen / seconds:.1f}")
                bar.update(1)
                if self.step % self.cfg.checkpoint_every == 0 or self.step == self.total:
                    self.save()
                    saved = self.step
        finally:
            bar.close()
            self.model.eval()
        if saved != self.step:
            self.save()
        return self.step >= self.total

    # -- checkpoints --------------------------------------------------------------------------

    def save(self) -> Path:
        """Write a checkpoint of this step (atomically: a folder renamed into place) and
        keep only the newest ``keep_checkpoints``."""
        folder = self.folder / CHECKPOINTS
        final = folder / f"step-{self.step:08d}"
        staged = folder / f".step-{self.step:08d}.partial"
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        torch.save({n: p.detach().cpu() for n, p in self.params}, staged / "trainable.pt")
        torch.save(self.optimizer.state_dict(), staged / "optimizer.pt")
        cuda = torch.cuda.get_rng_state_all() if self.device.type == "cuda" else []
        torch.save({"cpu": torch.get_rng_state(), "cuda": cuda}, staged / "rng.pt")
        state = {"step": self.step, "total_steps": self.total, "fingerprint": self.fingerprint}
        (staged / "state.json").write_text(json.dumps(state) + "\n", encoding="utf-8")
        _sync(staged)  # on disk before it is named complete: a power loss leaves no torn checkpoint
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staged, final)
        _sync_folder(folder)
        for old in checkpoints(self.folder)[: -self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def load(self, path: Path) -> None:
        """Continue from the checkpoint at ``path``.

        Raises:
            InputError: it was made by a run with another config or other data, or is unreadable.
        """
        try:
            state = json.loads((path / "state.json").read_text(encoding="utf-8"))
            if state.get("fingerprint") != self.fingerprint:
                raise InputError(f"checkpoint {path} was made with another config or other training rows; "
                                 "resume with the same --config and manifests, or start a new --out")  # fmt: skip
            saved = torch.load(path / "trainable.pt", map_location=self.device, weights_only=True)
            optimizer = torch.load(path / "optimizer.pt", map_location=self.device, weights_only=True)
            rng = torch.load(path / "rng.pt", weights_only=True)
        except (OSError, ValueError, RuntimeError) as err:
            raise InputError(f"checkpoint {path} cannot be read: {err}") from None
        params = dict(self.params)
        if set(saved) != set(params):
            raise InputError(f"checkpoint {path} holds other parameters than this run trains")
        with torch.no_grad():
            for name, value in saved.items():
                params[name].copy_(value)
        self.optimizer.load_state_dict(optimizer)
        torch.set_rng_state(rng["cpu"])
        if rng["cuda"] and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.step = int(state["step"])
        _trim_log(self.folder / "train_log.jsonl", self.step)


def _sync(folder: Path) -> None:
    """Flush a folder's files and the folder itself to disk."""
    for path in folder.iterdir():
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
    _sync_folder(folder)


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoints(folder: Path) -> list[Path]:
    """The run's complete checkpoints, oldest first."""
    where = folder / CHECKPOINTS
    if not where.is_dir():
        return []
    return sorted(p for p in where.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / "state.json").is_file())


def _trim_log(path: Path, step: int) -> None:
    """Drop the step log's lines after ``step`` (steps a stopped run did after its checkpoint
    are done again)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
