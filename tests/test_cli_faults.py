"""The end of a run and its outputs under faults a user meets: a write that fails, two runs
into one folder, signals while the run ends, file names the system refuses, huge values.

Every case is the real command line in a subprocess; faults are real (a file size limit, a
second process, signals sent by the process to itself at chosen points), never mocks.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_one_line_error, progress_frames, read_until, run_cli, start_analyze, write_video

pytestmark = pytest.mark.integration


def _file_size_limit(limit: int):
    """For the child: no file may grow past ``limit`` bytes (EFBIG, as a full disk gives
    ENOSPC; SIGXFSZ ignored so the write fails instead of killing the process)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("tracklens: error:")]


# -- 13: a failed write never replaces the older tracks.jsonl ---------------------------------


def test_a_failed_tracks_write_leaves_the_older_file_and_says_so(tmp_path, sample_video):
    """Regression: with the disk full (here a file size limit) the first track's line failed,
    the run still renamed its empty ``.partial`` over the older tracks.jsonl and printed
    "wrote .../tracks.jsonl": the earlier result was gone and the summary claimed success."""
    out = tmp_path / "out"
    out.mkdir()
    older = '{"track": "from an earlier run"}\n'
    (out / "tracks.jsonl").write_text(older)
    proc = start_analyze(str(sample_video), "--out", str(out), "--no-progress", preexec_fn=_file_size_limit(100))
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert (out / "tracks.jsonl").read_text() == older
    summary = next(line for line in stderr.splitlines() if "frames analysed" in line)
    assert "wrote" not in summary, summary
    (line,) = _error_lines(stderr)
    assert "File too large" in line and f"{out / 'tracks.jsonl'} from before is unchanged" in line
    assert "no track could be saved" in line
    assert "video:0:1" in stdout  # what was analysed is still shown
    assert not list(out.glob("*.partial*"))  # an empty leftover would only be reported as a crash later


def test_the_tracks_written_before_a_failure_stay_in_the_partial(tmp_path, sample_video):
    """The limit lets the first track's line through and stops the second: the first stays,
    whole, in the kept ``.partial``; the older tracks.jsonl is untouched."""
    video = _two_visits(sample_video, tmp_path / "two.mp4")
    reference = tmp_path / "reference"
    result = run_cli("analyze", str(video), "--out", str(reference), "--no-progress")
    assert result.returncode == 0, result.stderr
    first, second = (reference / "tracks.jsonl").read_text().splitlines(keepends=True)
    out = tmp_path / "out"
    out.mkdir()
    (out / "tracks.jsonl").write_text("older\n")
    limit = len(first.encode()) + len(second.encode()) // 2
    proc = start_analyze(str(video), "--out", str(out), "--no-progress", preexec_fn=_file_size_limit(limit))
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr
    assert (out / "tracks.jsonl").read_text() == "older\n"
    kept = out / "tracks.jsonl.partial"
    assert [json.loads(x)["track"] for x in kept.read_text().splitlines()] == [json.loads(first)["track"]]
    (line,) = _error_lines(stderr)
    assert f"the 1 track was written before the failure, kept in {kept}" in line and "2 tracks were analysed" in line


def _two_visits(sample: Path, path: Path) -> Path:
    """The sample's first 1.6 s, 3 s of an empty grey frame (longer than the tracker keeps a
    lost track), then its last 1.6 s: two tracks that end at different times."""
    import av
    import numpy as np
    from tracklens.pipeline.video_io import VideoWriter

    with av.open(str(sample)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    empty = np.full_like(frames[0], 128)
    with VideoWriter(path, 25.0) as writer:
        for frame in frames[:40] + [empty] * 75 + frames[-40:]:
            writer.write(frame)
    return path


# -- 14: one run per output folder ------------------------------------------------------------


def test_a_second_run_into_the_same_folder_is_refused_and_the_first_finishes(tmp_path, sample_video):
    """Regression: the second run renamed the first one's live ``.partial`` as a crash
    leftover, and the first, complete run then failed with "the run stopped there"."""
    out = tmp_path / "out"
    first = start_analyze(str(sample_video), "--out", str(out))
    try:
        seen = read_until(first, lambda s: progress_frames(s) >= 3)
        first.send_signal(signal.SIGSTOP)  # holds it mid-run, whatever the machine's speed
        before = _files(out)
        assert "tracks.jsonl.partial" in before, seen
        second = run_cli("analyze", str(sample_video), "--out", str(out), "--no-progress", timeout=300)
        assert_one_line_error(second, f"process {first.pid}", str(out), "in use")
        assert _files(out) == before
    finally:
        first.send_signal(signal.SIGCONT)
    _, rest = first.communicate(timeout=300)
    assert first.returncode == 0, seen + rest
    assert "Traceback" not in rest and not _error_lines(rest)
    (track,) = [json.loads(line) for line in (out / "tracks.jsonl").read_text().splitlines()]
    assert track["state"] == "ended" and track["last_seen"] > 3.5
    assert not list(out.glob("*.partial*")) and not list(out.glob(".tracklens.lock"))


def test_a_killed_run_does_not_block_the_next(tmp_path):
    """The kernel drops the lock of a process that dies: the next run goes ahead and keeps
    the dead run's tracks under a time-stamped name."""
    long_video = write_video(tmp_path / "long.mp4", frames=900)  # 300 analysed frames: killed long before the end
    out = tmp_path / "out"
    first = start_analyze(str(long_video), "--out", str(out))
    read_until(first, lambda s: progress_frames(s) >= 1)
    first.kill()
    first.wait(timeout=60)
    assert (out / "tracks.jsonl.partial").exists()
    result = run_cli("analyze", str(write_video(tmp_path / "v.mp4", frames=30)), "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "an earlier run that did not finish left tracks.jsonl.partial." in result.stderr
    assert (out / "tracks.jsonl").exists()


# -- 17: signals while a run ends ---------------------------------------------------------------

# The child sends itself signals at chosen points of the end of a run. ``storm``: SIGTERM and
# SIGINT, alternately, at every Python function call from the moment the run loop returns until
# the interpreter starts its exit (through the report, the progress bar's destructor and main's
# return). ``bar``: one SIGTERM inside the progress bar's destructor, where it once raised. With
# ``mid_run`` a real SIGTERM first stops the run at its second batch of frames.
_SIGNALS_AT_THE_END = """
import atexit, os, signal, sys
import tqdm
from tracklens.pipeline import driver, jobs

mid_run, point = {mid_run}, {point!r}
real_run, real_step, real_del = jobs.Analysis.run, driver.StreamDriver.step, tqdm.tqdm.__del__
batches, sent = [], []

def step(self, frames):
    batches.append(1)
    if mid_run and len(batches) == 2:
        os.kill(os.getpid(), signal.SIGTERM)
    return real_step(self, frames)

def storm(frame, event, arg):
    if event == "call":
        sent.append(1)
        os.kill(os.getpid(), signal.SIGTERM if len(sent) % 2 else signal.SIGINT)

def run(self, *args, **kwargs):
    try:
        return real_run(self, *args, **kwargs)
    finally:
        if point == "storm":
            sys.setprofile(storm)

def deleting(self):
    if point == "bar":
        sent.append(1)
        os.kill(os.getpid(), signal.SIGTERM)
    real_del(self)

def calm():
    sys.setprofile(None)
    print(f"signals sent while the run ended: {{len(sent)}}", flush=True)

atexit.register(calm)
driver.StreamDriver.step = step
jobs.Analysis.run = run
tqdm.tqdm.__del__ = deleting
from tracklens.pipeline.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("point", ["bar", "storm"])
@pytest.mark.parametrize("mid_run, status", [(False, 0), (True, 143)], ids=["after-a-whole-run", "after-a-sigterm"])
def test_no_signal_while_a_run_ends_prints_a_traceback(tmp_path, mid_run, status, point):
    """Regression: a second SIGTERM after the first one's handling window, or one right after
    a run ended, raised inside the progress bar's destructor, and Python printed a traceback
    under the report. Signals then are counted: the status is the run's own."""
    video = write_video(tmp_path / "v.mp4", frames=60)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "TRACKLENS_REDIS_URL"}
    code = _SIGNALS_AT_THE_END.format(mid_run=mid_run, point=point)
    command = [sys.executable, "-c", code, "analyze", str(video), "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr
    assert result.returncode == status, result.stderr
    sent = int(result.stdout.rsplit("signals sent while the run ended: ", 1)[1])
    assert sent > (100 if point == "storm" else 0)  # the signals really came while the run ended
    assert (out / "tracks.jsonl").exists() and not list(out.glob("*.partial*"))
    if mid_run:
        assert "terminated (SIGTERM); the tracks up to that point were kept" in result.stderr


# -- 18: names the system refuses, huge values -----------------------------------------------


def _loop(tmp_path: Path) -> Path:
    os.symlink(tmp_path / "loop-b", tmp_path / "loop-a")
    os.symlink(tmp_path / "loop-a", tmp_path / "loop-b")
    return tmp_path / "loop-a"


_PATH_CASES = {
    "video": lambda v, p: ("analyze", str(p), "--out", "{out}"),
    "config": lambda v, p: ("analyze", str(v), "--config", str(p), "--out", "{out}"),
    "out": lambda v, p: ("analyze", str(v), "--out", str(p)),
    "annotate": lambda v, p: ("analyze", str(v), "--out", "{out}", "--annotate", str(p) + ".mp4"),
    "manifest": lambda v, p: ("eval", str(p) + ".csv", "--estimator", "specialist", "--out", "{out}/r.json"),
    "eval config": lambda v, p: ("eval", "{manifest}", "--config", str(p), "--out", "{out}/r.json"),
    "eval out": lambda v, p: ("eval", "{manifest}", "--estimator", "specialist", "--out", str(p) + ".json"),
    "predictions": lambda v, p: ("eval", "{manifest}", "--estimator", "specialist", "--out", "{out}/r.json", "--predictions", str(p) + ".csv"),
}  # fmt: skip

_NAMED = {"video": "the video", "config": "--config", "out": "--out", "annotate": "--annotate", "manifest": "the manifest",
          "eval config": "--config", "eval out": "--out", "predictions": "--predictions"}  # fmt: skip


@pytest.mark.parametrize("problem", ["too long", "symlink loop"])
@pytest.mark.parametrize("where", list(_PATH_CASES))
def test_a_path_the_system_refuses_is_a_one_line_input_error(tmp_path, where, problem):
    """Regression: a name longer than the file system allows (ENAMETOOLONG) or a loop of
    symbolic links (ELOOP) given as any path was reported as a bug (exit 70), with the whole
    name echoed back."""
    video = write_video(tmp_path / "v.mp4", frames=10)
    (tmp_path / "m.csv").write_text("image,age\nnone.png,30\n")
    bad = tmp_path / ("x" * 300) if problem == "too long" else _loop(tmp_path) / "inside"
    args = _PATH_CASES[where](video, bad)
    result = run_cli(*(a.replace("{out}", str(tmp_path / "o")).replace("{manifest}", str(tmp_path / "m.csv")) for a in args))
    why = "name too long" if problem == "too long" else "loop of symbolic links"
    line = assert_one_line_error(result, _NAMED[where], why)
    assert "x" * 100 not in line and len(line) < 300, line


def test_huge_values_are_quoted_as_a_short_excerpt(tmp_path):
    """Regression: a 100,000-character --stream, a 5 MB value in a config file, a 100,000-
    character --config path (about the most one argument may hold) and --fps came back whole
    in the error line."""
    video = write_video(tmp_path / "v.mp4", frames=10)
    config = tmp_path / "big.yaml"
    config.write_text("stream: " + "s" * 5_000_000 + "\n")
    for args in (
        ("--stream", "a:" + "b" * 100_000),
        ("--config", str(config)),
        ("--config", "/" + "c" * 100_000),
        ("--fps", "9" * 100_000 + "x"),
    ):
        result = run_cli("analyze", str(video), "--out", str(tmp_path / "o"), *args, timeout=300)
        line = assert_one_line_error(result)
        assert len(line) < 400 and "characters)" in line, line[:500]


# -- 18: partial config sections, a read-only model cache --------------------------------------


def test_a_section_given_without_its_type_is_merged_into_the_default_type(tmp_path):
    """Regression: the README says any subset can be overridden, but a section with a choice
    of types given without ``type:`` failed with pydantic's "Unable to extract tag using
    discriminator" naming no key."""
    config = tmp_path / "c.yaml"
    config.write_text("estimator: {batch_size: 4}\ndetection:\n  face: {min_score: 0.4}\n")
    result = run_cli("analyze", str(write_video(tmp_path / "v.mp4", frames=10)), "--config", str(config), "--out",
                     str(tmp_path / "o"), "--no-progress")  # fmt: skip
    assert result.returncode == 0, result.stderr

    from tracklens.pipeline.config import load_config, load_serve_config

    loaded = load_config(config)
    assert (loaded.estimator.type, loaded.estimator.batch_size) == ("specialist", 4)
    assert (loaded.detection.face.type, loaded.detection.face.min_score) == ("centerface", 0.4)
    # a section of the default's type keeps the default's own values: the service's detectors
    # run one thread per call, and setting another key does not undo that
    detection = load_serve_config(config).detection
    assert (detection.face.min_score, detection.face.threads, detection.person.threads) == (0.4, 1, 1)


@pytest.mark.parametrize(
    "text, needles",
    [
        ("store: {url: 'redis://127.0.0.1:6379/0'}\n", ("store.type", "'url'", "memory, redis")),
        ("estimator: {type: mllm, backend: {model: some-vlm}}\n", ("estimator.backend.type", "transformers, openai")),
        ("estimator: {type: retinaface}\n", ("estimator.type", "'retinaface'", "'specialist', 'mllm', 'routed'")),
    ],
    ids=["keys-of-another-type", "no-default-type", "unknown-type"],
)
def test_a_section_that_needs_its_type_names_the_key(tmp_path, text, needles):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    video = write_video(tmp_path / "v.mp4", frames=10)
    result = run_cli("analyze", str(video), "--config", str(config), "--out", str(tmp_path / "o"))
    assert_one_line_error(result, "c.yaml", *needles)


def test_models_pull_into_a_read_only_cache_fails_before_downloading(tmp_path):
    """Regression: a pull into a read-only cache downloaded every wheel first and then failed on
    the first ``.part`` file. The cache is a read-only bind mount in a private mount namespace
    (``unshare``), so the file system really refuses, whoever runs the test."""
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    namespace = ["unshare", "--map-root-user", "--mount"]
    if subprocess.run([*namespace, "true"], capture_output=True).returncode != 0:
        pytest.skip("no user and mount namespaces here (unshare)")
    read_only = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    env = {k: v for k, v in os.environ.items() if k != "TRACKLENS_REDIS_URL"} | {"TRACKLENS_HOME": str(home)}
    result = subprocess.run(
        [*namespace, "sh", "-c", read_only, "sh", str(home), sys.executable, "-m", "tracklens.pipeline.cli", "models", "pull", "--force"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert_one_line_error(result, str(home), "not writable", "Read-only file system", "nothing was downloaded")
    assert list(home.iterdir()) == [home / "models"] and not list((home / "models").iterdir())
