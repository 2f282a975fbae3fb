"""What ``tracklens analyze`` prints when a run ends, and the exit status it returns."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from .summary import TrackSummary

__all__ = ["format_table", "report_analysis"]


def format_table(summaries: list[TrackSummary], time_base: Literal["media", "wall"] = "media") -> str:
    """Aligned text table of track summaries, oldest first; their times count ``time_base``
    seconds (the source's: a file's media seconds, a live stream's wall clock)."""
    head = ("track", "seen", "frames", "age", "gender", "expression", "estimates")
    rows = []
    for s in sorted(summaries, key=lambda s: (s.first_seen, s.track)):
        age, gender, expr = s.age, s.gender, s.expression
        rows.append(
            (
                s.track,
                _seen(s.first_seen, s.last_seen, time_base),
                str(s.frames),
                "-" if age.mean is None else f"{age.mean:.0f} ± {age.std:.0f}",
                "-" if gender.label is None else f"{gender.label} ({gender.p_female:.2f})",
                "-" if expr.label is None else f"{expr.label} ({expr.probs[expr.label]:.2f})",
                ", ".join(f"{k} {v}" for k, v in s.sources.items()) or "0",
            )
        )
    if not rows:
        return "no tracks found"
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _seen(first: float, last: float, time_base: Literal["media", "wall"]) -> str:
    """Media seconds as ``0.2-7.9``; wall-clock times of live streams as ``14:02:11-14:02:30``."""
    if time_base == "media":
        return f"{first:.1f}-{last:.1f}"
    return "-".join(time.strftime("%H:%M:%S", time.localtime(t)) for t in (first, last))


def report_analysis(result, job, signals, say: Callable[[str], None]) -> int:
    """Print the table, the summary line and one line per problem; return the exit status.

    Args:
        result: the run's :class:`~.jobs.JobResult`.
        job: the :class:`~.jobs.Analysis` it came from.
        signals: the :class:`~.shutdown.StopSignals` the run was under.
        say: prints one line to the user's terminal (stderr).
    """
    status = 0
    print(format_table(result.summaries, job.source.time_base), flush=True)
    estimates, invalid = sum(result.estimates.values()), sum(result.invalid.values())
    wrote = [str(p) for p in (result.tracks_path, result.annotated) if p is not None]
    say(
        f"{result.frames} frames analysed in {result.seconds:.1f} s ({result.frames / max(result.seconds, 1e-9):.1f} frames/s), "
        f"{len(result.summaries)} tracks, {estimates} estimates"
        + (f"; wrote {' and '.join(wrote)}" if wrote else "")
        + (f"; tracks stored in Redis at {job.store_url}" if job.store_url and not result.store_undelivered else "")
    )
    if result.recovered_partial is not None:
        say(f"tracklens: warning: an earlier run that did not finish left {result.recovered_partial.name}; it was kept")
    if invalid:
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(result.invalid.items(), key=lambda kv: -kv[1]))
        say(f"tracklens: warning: {invalid} of {estimates} estimates were not usable ({reasons})")
    if result.backend_failures:
        say(
            f"tracklens: error: {result.backend_failures} estimator requests failed (see the warning above); "
            "those crops have no estimate"
        )
        status = 1
    if result.store_undelivered:
        say(
            f"tracklens: error: the latest state of {result.store_undelivered} tracks did not reach Redis at "
            f"{job.store_url} ({result.store_error}); "
            + (f"{result.tracks_path} has every track" if result.tracks_path else "the tracks above are all that is left")
        )
        status = 1
    if result.output_error:
        say(f"tracklens: error: {result.output_error}; the run stopped there, {len(result.summaries)} tracks were analysed")
        status = 1
    if result.error:
        say(f"tracklens: error: {job.shown}: {result.error}; the tracks up to that point were kept")
        status = 1
    if result.state == "stopped":
        what = "interrupted" if signals.name == "SIGINT" else f"terminated ({signals.name})"
        say(f"tracklens: {what}; the tracks up to that point were kept")
        status = signals.exit_status
    return status
