"""``tracklens eval``: the command's whole run, from manifest to report file."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from ..errors import ConfigError, InputError, OutputError

__all__ = ["check_predictions_path", "estimator_configs", "run_eval"]


def estimator_configs(estimator, which: str) -> dict:
    """``{name: estimator config}`` to evaluate, from the config's ``estimator`` section.

    ``specialist`` is the configured specialist (a routed estimator's fallback, else the
    defaults); ``mllm`` the configured MLLM (alone or a routed estimator's primary);
    ``routed`` the routed pair as the pipeline runs it; ``both`` the specialist and the MLLM
    side by side.
    """
    from ..config import SpecialistEstimatorConfig

    kind = estimator.type
    found = {
        "specialist": estimator if kind == "specialist" else estimator.fallback if kind == "routed" else SpecialistEstimatorConfig(),
        "mllm": estimator if kind == "mllm" else estimator.primary if kind == "routed" else None,
        "routed": estimator if kind == "routed" else None,
    }
    wanted = ["specialist", "mllm"] if which == "both" else [which]
    for name in wanted:
        if found[name] is None:
            raise ConfigError(
                f"--estimator {which} needs an {'MLLM' if name == 'mllm' else 'routed estimator'} in --config: set "
                "`estimator:` to type mllm or routed (try `tracklens models tiny-vlm DIR` for a smoke-test model)"
            )
    return {name: found[name] for name in wanted}


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def check_predictions_path(path: Path, manifest: Path, out: Path) -> Path:
    """Check the ``--predictions`` file before any work: not a folder, ``.csv`` or ``.jsonl``,
    not the manifest, not the report, and its folder writable.

    Raises:
        OutputError: one line naming the problem.
    """
    from ..outputs import check_output_folder
    from .predictions import PREDICTION_SUFFIXES

    if path.is_dir():
        raise OutputError(f"--predictions {path} is a folder; give a file name such as {path / 'predictions.csv'}")
    if path.suffix.lower() not in PREDICTION_SUFFIXES:
        shown = f"the extension {path.suffix!r}" if path.suffix else "a name without extension"
        raise OutputError(f"--predictions {path}: {shown} is not a format I write; give a file name ending in .csv or .jsonl")
    if _same_file(path, manifest):
        raise OutputError(f"--predictions {path} is the manifest; writing it would destroy the labels: choose another file")
    if _same_file(path, out):
        raise OutputError(f"--predictions {path} is also the --out report; give them different files")
    return check_output_folder(path.parent, path.name, flag="--predictions")


def _write_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` by way of ``path.partial`` and a rename: never half a file under
    the final name."""
    staged = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staged.write_text(text, encoding="utf-8")
        os.replace(staged, path)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None


def run_eval(
    manifest: str, which: str, config_path: str | None, out: Path, say: Callable[[str], None], predictions: Path | None = None
) -> int:
    """Evaluate ``which`` (specialist, mllm, routed or both) on ``manifest``; write the JSON
    report ``out`` and, when given, the ``predictions`` file (see :mod:`.predictions`);
    returns the exit status.

    Everything that can be checked is checked before a model loads: the config, every row
    of the manifest, the report path, the predictions path.
    """
    from ..config import load_config
    from ..detectors import build_detector
    from ..estimators import build_estimator
    from ..models import ModelCache
    from ..outputs import check_output_folder
    from .harness import evaluate
    from .manifest import load_manifest
    from .predictions import format_predictions, prediction_rows
    from .prepare import build_crops
    from .table import format_counts, format_report

    config = load_config(config_path)
    samples = load_manifest(manifest)
    if out.suffix.lower() != ".json":
        raise OutputError(f"--out {out}: the report is JSON; give a file name ending in .json")
    check_output_folder(out.parent, out.name, inputs=(Path(manifest),), flag="--out")
    if predictions is not None:
        check_predictions_path(predictions, Path(manifest), out)
    configs = estimator_configs(config.estimator, which)
    models = ModelCache(progress=say)
    with ExitStack() as owned:
        detector = _owned(owned, build_detector(config.detection.face, models))
        rows = build_crops(samples, detector, config.crops)
        invalid = [(s, r.invalid) for s, r in zip(samples, rows) if r.crop is None]
        if len(invalid) == len(samples):
            raise InputError(f"no row of {manifest} can be evaluated; the first: {invalid[0][0].where}: {invalid[0][1]}")
        estimators = {name: _owned(owned, build_estimator(cfg, models)) for name, cfg in configs.items()}
        min_face_px = config.aggregation.min_expression_face_px
        result = evaluate(samples, rows, estimators, min_face_px)
    print(format_report(result.reports))
    document = {"manifest": str(manifest), "predictions": None if predictions is None else str(predictions), "estimators": result.reports}
    _write_atomic(out, json.dumps(document, indent=2) + "\n")
    if predictions is not None:
        _write_atomic(predictions, format_predictions(prediction_rows(samples, rows, result.estimates, min_face_px), predictions.suffix))
    for sample, reason in invalid[:5]:
        say(f"tracklens: warning: {sample.where}: invalid row, not evaluated: {reason}")
    if len(invalid) > 5:
        say(f"tracklens: warning: ... and {len(invalid) - 5} more invalid rows (all listed in {out})")
    faceless = Counter(r.face for r in rows if r.face in ("no_face", "face_unreadable"))
    if faceless:
        where = f"the face column of {predictions}" if predictions is not None else "--predictions FILE lists them"
        parts = [f"{what} in {faceless[key]} row{'s' if faceless[key] != 1 else ''}" for key, what in
                 (("no_face", "no face found"), ("face_unreadable", "an unreadable face")) if faceless[key]]  # fmt: skip
        say(f"tracklens: warning: {' and '.join(parts)}; there the estimators saw only the body ({where})")
    for name, report in result.reports.items():
        failed = sum(report["primary_failures"].values())
        if failed:
            why = format_counts(report["primary_failures"])
            where = f"the primary_failure column of {predictions}" if predictions is not None else "--predictions FILE names each"
            say(f"tracklens: warning: {name}: the primary did not answer {failed} of {report['n']} crops ({why}); "
                f"the fallback answered them ({where})")  # fmt: skip
    wrote = f"{out} and {predictions}" if predictions is not None else str(out)
    say(f"{len(samples)} people, {len(invalid)} invalid rows; wrote {wrote}")
    return 0


def _owned(stack: ExitStack, resource):
    """``resource``, closed when ``stack`` closes if it has ``close()``."""
    close = getattr(resource, "close", None)
    if close is not None:
        stack.callback(close)
    return resource
