"""``tracklens finetune``: the command's whole run, from manifests to a trained adapter and its
before/after report.

The run folder ``DIR`` holds, as the run goes:

- ``config.yaml``: the exact config (every value, defaults included) and ``run.json``: the
  manifests with their sha256, the split, the rows left out and why, versions, the device;
- ``val.jsonl``: the validation rows, when they were split off the training manifest (a
  manifest ``tracklens eval`` takes);
- ``checkpoints/step-N/``: the newest checkpoints, ``train_log.jsonl``: loss and learning
  rate per step;
- ``before.json`` and, at the end, ``report.json`` (``before`` and ``after``, each in the
  shape of ``tracklens eval --out``);
- ``adapter/`` (LoRA) or ``model/`` (full fine-tuning), and ``eval.yaml``: a config whose
  MLLM is the trained one, for ``analyze``, ``eval`` and ``serve``; with ``--merge``,
  ``merged/``: the base model with the adapter merged in.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import statistics
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import yaml

from ..errors import ConfigError, InputError
from ..models.cache import sha256_file
from .rows import RunFolder, check_folder, load_samples, manifest_row, prepare_rows, split_rows

__all__ = ["run_finetune"]

def _mllm(estimator):
    """The MLLM to start from: an ``mllm`` estimator (or a routed one's primary) with the
    transformers backend and no adapter yet."""
    mllm = estimator.primary if estimator.type == "routed" else estimator
    if mllm.type != "mllm":
        raise ConfigError("finetune needs an MLLM to start from: set `estimator:` to type mllm with backend type "
                          "transformers (try `tracklens models tiny-vlm DIR` for a smoke-test model)")  # fmt: skip
    if mllm.backend.type != "transformers":
        raise ConfigError(f"finetune trains the model in this process: estimator.backend.type must be transformers, "
                          f"not {mllm.backend.type} (an endpoint's weights are out of reach)")  # fmt: skip
    from ..estimators.mllm.loading import check_source

    check_source(mllm.backend.model)
    if mllm.backend.adapter is not None:
        raise ConfigError("finetune starts from a base model: estimator.backend.adapter is set; merge that adapter first "
                          "(tracklens finetune --merge writes DIR/merged) and start from the merged model")  # fmt: skip
    return mllm


def run_finetune(
    train_manifest: str,
    val_manifest: str | None,
    config_path: str | None,
    out: Path,
    say: Callable[[str], None],
    resume: bool = False,
    merge: bool = False,
    progress: bool = True,
) -> int:
    """Fine-tune the config's MLLM on ``train_manifest``; evaluate it on the validation rows
    before and after; write the run folder (see the module docstring); returns the exit
    status (128 + N when stopped by signal N, after writing a checkpoint).

    Everything that can be checked is checked before a model loads: the config, the
    manifests (rows that cannot be parsed are skipped and named), the run folder.
    """
    from ..config import FinetuneRunConfig, load_config
    from ..outputs import OutputLock

    config = load_config(config_path, model=FinetuneRunConfig)
    mllm = _mllm(config.estimator)
    train_samples, skipped = load_samples(train_manifest, say, "training")
    val_samples, val_skipped = load_samples(val_manifest, say, "validation") if val_manifest else (None, [])
    folder = check_folder(out, resume)
    _check_packages(config.finetune.method)
    manifests = {"train": {"path": str(Path(train_manifest).resolve()), "sha256": sha256_file(Path(train_manifest))}}
    if val_manifest:
        manifests["val"] = {"path": str(Path(val_manifest).resolve()), "sha256": sha256_file(Path(val_manifest))}
    resolved = config.model_dump(mode="json")
    fingerprint = hashlib.sha256(json.dumps({"config": resolved, "manifests": manifests}, sort_keys=True).encode()).hexdigest()
    with OutputLock(out):
        if folder.started:
            run = folder.read_json("run.json")
            if run.get("fingerprint") != fingerprint:
                raise InputError(f"--resume: {out} was started with another config or other manifests; resume with the "
                                 "same ones, or start a new --out")  # fmt: skip
            if folder.finished and not merge:
                say(f"the run in {out} is finished (report.json); nothing to resume")
                return 0
        return _Run(config, mllm, folder, train_samples, val_samples, manifests, fingerprint, say, progress).go(
            skipped + val_skipped, merge
        )


def _check_packages(method: str) -> None:
    missing = []
    for name in ("torch", "transformers", "peft" if method == "lora" else None):
        if name is None:
            continue
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(f"tracklens finetune needs {', '.join(missing)}: install tracklens with the [finetune] extra "
                          "(pip install 'tracklens[finetune]')")  # fmt: skip


class _Run:
    """One ``tracklens finetune`` run, from loading the model to the report."""

    def __init__(self, config, mllm, folder: RunFolder, train_samples, val_samples, manifests, fingerprint, say, progress) -> None:
        self.config, self.mllm, self.folder = config, mllm, folder
        self.cfg = config.finetune
        self.train_samples, self.val_samples = train_samples, val_samples
        self.manifests, self.fingerprint, self.say, self.progress = manifests, fingerprint, say, progress

    def go(self, skipped: list[str], merge: bool) -> int:
        import torch

        from ..detectors import build_detector
        from ..estimators.mllm.loading import load_model, load_processor
        from ..evaluation.run import _owned
        from ..models import ModelCache
        from ..shutdown import StopSignals

        cfg, backend = self.cfg, self.mllm.backend
        device = torch.device(backend.device if backend.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
        precision = cfg.precision if cfg.precision != "auto" else ("bf16-mixed" if device.type == "cuda" else "float32")
        weights = "bfloat16" if precision == "bf16-mixed" and cfg.method == "lora" else "float32"
        with ExitStack() as owned:
            # the model first: a config that names no loadable model leaves the run folder empty
            self.say(f"loading {backend.model} on {device} ({weights} weights, {precision})")
            processor = load_processor(backend.model, backend.local_files_only)
            model = load_model(backend.model, weights, device, backend.local_files_only)
            detector = _owned(owned, build_detector(self.config.detection.face, ModelCache(progress=self.say)))
            train, val, split = self._split()
            usable, prepared, invalid = prepare_rows(train, detector, self.config.crops, self.say)
            if not usable:
                raise InputError(f"no training row can be used; the first: {invalid[0]}")
            encoder, example = self._encoder(model, processor, train, usable, prepared)
            self._write_start(len(usable), val, split, skipped + invalid, device, precision)
            with StopSignals() as signals:
                before = self._before(model, processor, val, detector, signals.event)
                if before is None:
                    return self._stopped(signals, "before training, while evaluating the untrained model")
                trainer, peft_model = self._trainer(model, encoder, example, len(usable), precision)
                self._resume(trainer)
                self.say(f"training {len(usable)} rows: {trainer.total} steps of {cfg.batch_size} x {cfg.grad_accum} rows "
                         f"({cfg.method}{', vision tower too' if cfg.tune_vision else ''})")  # fmt: skip
                if not trainer.run(signals.event, self.progress):
                    return self._stopped(signals, f"at step {trainer.step} of {trainer.total}; the checkpoint is in "
                                                  f"{_latest(self.folder)}; --resume continues")  # fmt: skip
                self._save_result(model, processor, peft_model)
                after = self._evaluate("after", model, processor, val, detector, signals.event)
                if after is None:
                    return self._stopped(signals, "after training, while evaluating the trained model; the trained "
                                                  "weights are saved; --resume evaluates them")  # fmt: skip
            # From here a signal interrupts as anywhere else in the CLI (exit 130/143): the report
            # is written at once, and a merge stopped halfway leaves only its staging folder.
            signals.restore()
            self._report(before, after, val, weights)
            if merge:
                self._merge(model, processor, peft_model)
        return 0

    # -- data ---------------------------------------------------------------------------------

    def _split(self) -> tuple[list, list, str]:
        if self.val_samples is not None:
            seen = {s.identity for s in self.train_samples if s.identity}
            shared = {s.identity for s in self.val_samples if s.identity} & seen
            if shared:
                self.say(f"tracklens: warning: {len(shared)} identities are in both the training and the --val manifest: "
                         "the validation numbers will be optimistic")  # fmt: skip
            return self.train_samples, self.val_samples, "manifest"
        train_idx, val_idx, how = split_rows(self.train_samples, self.cfg.val_share, self.cfg.seed)
        return [self.train_samples[i] for i in train_idx], [self.train_samples[i] for i in val_idx], how

    def _write_start(self, n_train: int, val: list, split: str, left_out: list[str], device, precision: str) -> None:
        """The run's record, written once everything it needs has been checked (until then
        the run folder stays empty and the same command can be run again)."""
        if self.folder.started:
            return
        import importlib.metadata

        import torch
        import transformers

        def version(name: str) -> str | None:
            try:
                return importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                return None

        if "val" not in self.manifests:
            self.folder.write("val.jsonl", "".join(json.dumps(manifest_row(s)) + "\n" for s in val))
        self.folder.write("config.yaml", yaml.safe_dump(self.config.model_dump(mode="json"), sort_keys=False))
        run = {
            "manifests": self.manifests,
            "val_manifest": self.manifests.get("val", {}).get("path") or str((self.folder / "val.jsonl").resolve()),
            "split": split, "train_rows": n_train, "val_rows": len(val), "left_out": left_out,
            "fingerprint": self.fingerprint, "device": str(device), "precision": precision,
            "versions": {"tracklens": version("tracklens"), "torch": torch.__version__, "transformers": transformers.__version__,
                         "peft": version("peft")},
        }  # fmt: skip
        self.folder.write("run.json", json.dumps(run, indent=2) + "\n")

    def _example(self, train: list, prepared: list):
        from ..evaluation.prepare import recut
        from .data import Example

        def example(i: int) -> Example:
            return Example.of(recut(train[i], prepared[i], i, self.config.crops), train[i])

        return example

    # -- evaluation ---------------------------------------------------------------------------

    def _estimator(self, model, processor):
        from ..estimators.mllm import MllmEstimator
        from ..estimators.mllm.transformers_backend import TransformersBackend

        config = self.mllm.model_copy(update={"backend": self.mllm.backend.model_copy(update={"warmup": False})})
        return MllmEstimator(config, backend=TransformersBackend(config.backend, loaded=(model, processor)))

    def _evaluate(self, phase: str, model, processor, val: list, detector, stop) -> dict | None:
        """The eval report document of the model as it is now, or None when stopped."""
        from ..evaluation.harness import summarize
        from ..evaluation.run import estimate_in_chunks, report_document

        model.eval()
        self.say(f"{phase}: evaluating {len(val)} validation rows ({self.mllm.mode} answers)")
        estimator = self._estimator(model, processor)
        rows, estimates, seconds = estimate_in_chunks(val, detector, {"mllm": estimator}, self.config.crops, stop,
                                                      self.progress, desc=phase)  # fmt: skip
        if len(rows) < len(val):
            return None
        if all(r.crop is None for r in rows):
            raise InputError(f"no validation row can be evaluated; the first: {val[0].where}: {rows[0].invalid}")
        result = summarize(val, rows, estimates, seconds, self.config.aggregation.min_expression_face_px)
        manifest = self.manifests.get("val", {}).get("path") or str((self.folder / "val.jsonl").resolve())
        return report_document(manifest, None, None, result.reports)

    def _before(self, model, processor, val, detector, stop) -> dict | None:
        if (self.folder / "before.json").is_file():
            return self.folder.read_json("before.json")
        before = self._evaluate("before", model, processor, val, detector, stop)
        if before is not None:
            self.folder.write("before.json", json.dumps(before, indent=2) + "\n")
        return before

    # -- training -----------------------------------------------------------------------------

    def _encoder(self, model, processor, train, usable, prepared):
        """The training examples' encoder and the row -> example function; one row is encoded
        here, so a checkpoint whose template cannot take the answer fails before any work."""
        from ..errors import ModelError
        from ..estimators.mllm.prompts import load_prompt
        from ..estimators.mllm.transformers_backend import image_options
        from .data import Encoder, answer_age

        ages = [answer_age(train[i].age) for i in usable if train[i].age is not None]
        end = model.generation_config.eos_token_id
        end = end[0] if isinstance(end, list) else end
        end = end if end is not None else processor.tokenizer.eos_token_id
        if end is None:
            raise ModelError(f"{self.mllm.backend.model} names no end-of-sequence token: the answer's end cannot be trained")
        encoder = Encoder(processor, load_prompt(self.mllm.prompt), [int(end)], image_options(processor, self.mllm.backend),
                          stand_in_age=int(statistics.median(ages)) if ages else 30)  # fmt: skip
        example = self._example([train[i] for i in usable], [prepared[i] for i in usable])
        try:
            encoder.answer(example(0))
        except ValueError as err:
            raise ModelError(f"{self.mllm.backend.model}: its chat template cannot be trained with tracklens's answers "
                             f"({err})") from None  # fmt: skip
        return encoder, example

    def _trainer(self, model, encoder, example, rows: int, precision):
        import torch

        from .train import Trainer, prepare_model

        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        peft_model = prepare_model(model, cfg)
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        autocast = torch.bfloat16 if precision == "bf16-mixed" else None
        trainer = Trainer(model, encoder, rows, example, cfg, self.folder.path, self.fingerprint, autocast)
        return trainer, peft_model

    def _resume(self, trainer) -> None:
        """Continue from the newest checkpoint that can be read (an unreadable one is named and
        the one before it tried)."""
        from .train import checkpoints

        failed = None
        for path in reversed(checkpoints(self.folder.path)):
            try:
                trainer.load(path)
            except InputError as err:
                self.say(f"tracklens: warning: {err}; trying the checkpoint before it")
                failed = failed or err
                continue
            self.say(f"resuming at step {trainer.step} of {trainer.total} ({path})")
            return
        if failed is not None:
            raise InputError(f"no checkpoint in {self.folder / 'checkpoints'} can be read; the newest: {failed}")

    def _stopped(self, signals, where: str) -> int:
        what = "interrupted" if signals.name == "SIGINT" else f"terminated ({signals.name})"
        self.say(f"tracklens: {what} {where}")
        return signals.exit_status

    # -- results ------------------------------------------------------------------------------

    def _save_result(self, model, processor, peft_model) -> None:
        """The trained adapter (``adapter/``) or model (``model/``), staged then renamed."""
        name = "adapter" if peft_model is not None else "model"
        final, staged = self.folder / name, self.folder / f".{name}.partial"
        shutil.rmtree(staged, ignore_errors=True)
        if peft_model is not None:
            peft_model.save_pretrained(staged)
        else:
            model.save_pretrained(staged)
            processor.save_pretrained(staged)
        shutil.rmtree(final, ignore_errors=True)
        staged.rename(final)

    def _trained_config(self, weights: str) -> dict:
        """The config with the trained MLLM: for analyze, eval and serve."""
        document = self.config.model_dump(mode="json", exclude={"finetune"})
        estimator = document["estimator"] if document["estimator"]["type"] == "mllm" else document["estimator"]["primary"]
        backend = estimator["backend"]
        if self.cfg.method == "lora":
            backend["adapter"] = str((self.folder / "adapter").resolve())
        else:
            backend["model"] = str((self.folder / "model").resolve())
        backend["dtype"] = weights  # the dtype the "after" numbers were measured in
        # what estimates name as their model: the run, not this machine's folders
        backend["model_id"] = f"{self.mllm.backend.model}+finetune:{self.folder.path.resolve().name}"
        return document

    def _report(self, before: dict, after: dict, val: list, weights: str) -> None:
        from ..evaluation.table import format_report

        header = ("# Written by tracklens finetune: the run's config with the trained MLLM, for analyze, eval and serve\n"
                  f"# (dtype {weights}: the one the \"after\" numbers of report.json were measured in).\n")
        self.folder.write("eval.yaml", header + yaml.safe_dump(self._trained_config(weights), sort_keys=False))
        self.folder.write("report.json", json.dumps({"before": before, "after": after}, indent=2) + "\n")
        reports = {"before": before["estimators"]["mllm"], "after": after["estimators"]["mllm"]}
        print(format_report(reports))
        mae = [r["age"]["mae"] for r in reports.values()]
        acc = [r["gender"]["accuracy"] for r in reports.values()]
        line = []
        if None not in mae and not any(math.isnan(m) for m in mae):
            line.append(f"age MAE {mae[0]:.2f} -> {mae[1]:.2f}")
        if None not in acc:
            line.append(f"gender accuracy {acc[0]:.3f} -> {acc[1]:.3f}")
        run = self.folder.read_json("run.json")
        self.say(f"{'; '.join(line) or 'done'} on {len(val)} validation rows; wrote {self.folder.path}/report.json; "
                 f"evaluate again with: tracklens eval {run['val_manifest']} --estimator mllm --config "
                 f"{self.folder.path}/eval.yaml")  # fmt: skip

    def _merge(self, model, processor, peft_model) -> None:
        if peft_model is None:
            self.say(f"--merge: full fine-tuning wrote a whole model already ({self.folder.path}/model)")
            return
        final, staged = self.folder / "merged", self.folder / ".merged.partial"
        shutil.rmtree(staged, ignore_errors=True)
        from ..estimators.mllm.loading import quiet_peft

        with quiet_peft():
            merged = peft_model.merge_and_unload()
        merged.save_pretrained(staged)
        processor.save_pretrained(staged)
        shutil.rmtree(final, ignore_errors=True)
        staged.rename(final)
        self.say(f"wrote {final}: the base model with the adapter merged in (for engines that load one checkpoint)")


def _latest(folder: RunFolder) -> Path | None:
    from .train import checkpoints

    found = checkpoints(folder.path)
    return found[-1] if found else None
