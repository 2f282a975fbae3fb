"""``tracklens eval``: the command's whole run, from manifest to report file."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from ..errors import ConfigError, InputError, OutputError
from .harness import run_estimators, summarize
from .prepare import build_crops

__all__ = ["CHUNK_ROWS", "check_predictions_path", "estimate_in_chunks", "estimator_configs", "report_document", "run_eval",
           "write_atomic"]


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


def report_document(manifest, predictions: Path | None, partial: dict | None, reports: dict) -> dict:
    """The JSON document ``tracklens eval --out`` writes."""
    return {
        "manifest": str(manifest),
        "predictions": None if predictions is None else str(predictions),
        "partial": partial,
        "estimators": reports,
    }


def write_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` by way of ``path.partial`` and a rename: never half a file under
    the final name."""
    staged = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staged.write_text(text, encoding="utf-8")
        os.replace(staged, path)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None


#: Rows read, prepared and estimated at a time: a stop request waits for at most one chunk,
#: and a 5,000-row manifest shows its progress as it goes.
CHUNK_ROWS = 16


def run_eval(
    manifest: str,
    which: str,
    config_path: str | None,
    out: Path,
    say: Callable[[str], None],
    predictions: Path | None = None,
    progress: bool = True,
) -> int:
    """Evaluate ``which`` (specialist, mllm, routed or both) on ``manifest``; write the JSON
    report ``out`` and, when given, the ``predictions`` file (see :mod:`.predictions`);
    returns the exit status.

    Everything that can be checked is checked before a model loads: the config, every row
    of the manifest, the report path, the predictions path. The rows are then evaluated
    :data:`CHUNK_ROWS` at a time, with a progress bar on stderr when it is a terminal
    (``progress``). SIGINT or SIGTERM stops before the next chunk: the report (and the
    predictions) then hold the rows evaluated so far, marked ``partial``, and the status is
    130 or 143.
    """
    from ..config import load_config
    from ..detectors import build_detector
    from ..estimators import build_estimator
    from ..models import ModelCache
    from ..outputs import check_output_folder
    from ..shutdown import StopSignals
    from .manifest import load_manifest
    from .predictions import format_predictions, prediction_rows
    from .table import format_report

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
        estimators = {name: _owned(owned, build_estimator(cfg, models)) for name, cfg in configs.items()}
        with StopSignals() as signals:  # from here on, a signal stops between chunks and keeps what was done
            rows, estimates, seconds = estimate_in_chunks(samples, detector, estimators, config.crops, signals.event, progress)
    done = samples[: len(rows)]
    invalid = [(s, r.invalid) for s, r in zip(done, rows) if r.crop is None]
    partial = len(rows) < len(samples)
    if not partial and len(invalid) == len(samples):
        raise InputError(f"no row of {manifest} can be evaluated; the first: {invalid[0][0].where}: {invalid[0][1]}")
    min_face_px = config.aggregation.min_expression_face_px
    result = summarize(done, rows, estimates, seconds, min_face_px)
    stopped = None
    if partial:
        stopped = {"rows_evaluated": len(rows), "rows_in_manifest": len(samples), "stopped_by": signals.name}
        print(f"PARTIAL: the first {len(rows)} of {len(samples)} rows (stopped by {signals.name})\n")
    print(format_report(result.reports))
    document = report_document(manifest, predictions, stopped, result.reports)
    write_atomic(out, json.dumps(document, indent=2) + "\n")
    if predictions is not None:
        written = prediction_rows(done, rows, result.estimates, min_face_px)
        write_atomic(predictions, format_predictions(written, predictions.suffix))
    _warn(result.reports, rows, invalid, out, predictions, say)
    wrote = f"{out} and {predictions}" if predictions is not None else str(out)
    people = f"{len(rows)} of {len(samples)} people" if partial else f"{len(samples)} people"
    say(f"{people}, {len(invalid)} invalid rows; wrote {wrote}" + (" (partial)" if partial else ""))
    if signals.signum is None:
        return 0
    what = "interrupted" if signals.name == "SIGINT" else f"terminated ({signals.name})"
    kept = "the rows evaluated up to that point were kept" + (", in a report marked partial" if partial else "")
    say(f"tracklens: {what}; {kept}")
    return signals.exit_status


def estimate_in_chunks(samples: list, detector, estimators: dict, crop_cfg, stop, progress: bool, desc: str = "eval") -> tuple[list, dict, Counter]:
    """The prepared rows, their estimates per estimator and the seconds each estimator took
    (as :func:`.harness.run_estimators` gives them), :data:`CHUNK_ROWS` rows at a time until
    the end or until ``stop`` (a ``threading.Event``) is set."""
    import sys

    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    rows: list = []
    estimates: dict[str, list] = {name: [] for name in estimators}
    seconds: Counter = Counter({name: 0.0 for name in estimators})
    # disable=None: a bar only on a terminal, so logs and pipes get no carriage-return noise
    disable = None if progress else True
    bar = tqdm(total=len(samples), unit="row", desc=desc, disable=disable, file=sys.stderr, dynamic_ncols=True)
    try:
        with logging_redirect_tqdm():  # warnings (an MLLM endpoint retrying) print above the bar
            for start in range(0, len(samples), CHUNK_ROWS):
                if stop.is_set():
                    break
                chunk = build_crops(samples[start : start + CHUNK_ROWS], detector, crop_cfg, start=start)
                got, took = run_estimators(chunk, estimators)
                rows += chunk
                for name in estimators:
                    estimates[name] += got[name]
                    seconds[name] += took[name]
                bar.update(len(chunk))
    finally:
        bar.close()
    return rows, estimates, seconds


def _warn(reports: dict, rows: list, invalid: list, out: Path, predictions: Path | None, say: Callable) -> None:
    """One warning per kind of row the metrics could not use as they are."""
    from .table import format_counts

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
    for name, report in reports.items():
        failed = sum(report["primary_failures"].values())
        if failed:
            why = format_counts(report["primary_failures"])
            where = f"the primary_failure column of {predictions}" if predictions is not None else "--predictions FILE names each"
            say(f"tracklens: warning: {name}: the primary did not answer {failed} of {report['n']} crops ({why}); "
                f"the fallback answered them ({where})")  # fmt: skip


def _owned(stack: ExitStack, resource):
    """``resource``, closed when ``stack`` closes if it has ``close()``."""
    close = getattr(resource, "close", None)
    if close is not None:
        stack.callback(close)
    return resource
