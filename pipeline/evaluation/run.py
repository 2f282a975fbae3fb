"""``tracklens eval``: the command's whole run, from manifest to report file."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError, InputError, OutputError

__all__ = ["estimator_configs", "run_eval"]


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


def run_eval(manifest: str, which: str, config_path: str | None, out: Path, say: Callable[[str], None]) -> int:
    """Evaluate ``which`` (specialist, mllm, routed or both) on ``manifest``; write ``out``;
    returns the exit status.

    Everything that can be checked is checked before a model loads: the config, every row
    of the manifest, the report path.
    """
    from ..config import load_config
    from ..detectors import build_detector
    from ..estimators import build_estimator
    from ..models import ModelCache
    from ..outputs import check_output_folder
    from .harness import build_crops, evaluate, format_report
    from .manifest import load_manifest

    config = load_config(config_path)
    samples = load_manifest(manifest)
    if out.suffix.lower() != ".json":
        raise OutputError(f"--out {out}: the report is JSON; give a file name ending in .json")
    check_output_folder(out.parent, out.name, inputs=(Path(manifest),), flag="--out")
    configs = estimator_configs(config.estimator, which)
    models = ModelCache(progress=say)
    crops = build_crops(samples, build_detector(config.detection.face, models), config.crops)
    invalid = [(s, c) for s, c in zip(samples, crops) if isinstance(c, str)]
    if len(invalid) == len(samples):
        raise InputError(f"no row of {manifest} can be evaluated; the first: {invalid[0][0].where}: {invalid[0][1]}")
    estimators = {name: build_estimator(cfg, models) for name, cfg in configs.items()}
    reports = evaluate(samples, crops, estimators, config.aggregation.min_expression_face_px)
    print(format_report(reports))
    staged = out.with_name(out.name + ".partial")
    try:
        staged.write_text(json.dumps({"manifest": str(manifest), "estimators": reports}, indent=2) + "\n")
        os.replace(staged, out)
    except OSError as err:
        raise OutputError(f"cannot write {out}: {err.strerror or err}") from None
    for sample, reason in invalid[:5]:
        say(f"tracklens: warning: {sample.where}: invalid row, not evaluated: {reason}")
    if len(invalid) > 5:
        say(f"tracklens: warning: ... and {len(invalid) - 5} more invalid rows (all listed in {out})")
    say(f"{len(samples)} people, {len(invalid)} invalid rows; wrote {out}")
    return 0
