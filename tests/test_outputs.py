"""Output files: tracks.jsonl written as tracks end and replaced only by a rename; checks
of output paths before any work."""

from __future__ import annotations

import json
import os

import pytest
from tracklens.pipeline.errors import OutputError
from tracklens.pipeline.outputs import TrackLog, check_output_folder, check_video_output
from tracklens.pipeline.summary import TrackSummary


def _t(key: str) -> TrackSummary:
    return TrackSummary(track=key, stream=key.split(":")[0], first_seen=0.0, last_seen=1.0, frames=2, state="ended")


def test_ended_tracks_are_on_disk_before_the_run_ends_and_the_old_file_stays_until_commit(tmp_path):
    final = tmp_path / "tracks.jsonl"
    final.write_text('{"track": "old"}\n')
    log = TrackLog(final)
    log.write(_t("a:0:1"))
    log.write(_t("a:0:2"))
    # readable by another process now (a kill here keeps both), the old file untouched
    assert [json.loads(x)["track"] for x in (tmp_path / "tracks.jsonl.partial").read_text().splitlines()] == ["a:0:1", "a:0:2"]
    assert final.read_text() == '{"track": "old"}\n'
    assert log.commit() == final
    assert [json.loads(x)["track"] for x in final.read_text().splitlines()] == ["a:0:1", "a:0:2"]
    assert not (tmp_path / "tracks.jsonl.partial").exists()


def test_a_killed_runs_leftover_is_kept_not_overwritten(tmp_path):
    (tmp_path / "tracks.jsonl.partial").write_text('{"track": "from the killed run"}\n')
    log = TrackLog(tmp_path / "tracks.jsonl")
    assert log.recovered is not None and log.recovered.read_text() == '{"track": "from the killed run"}\n'
    log.commit()


class _FullDisk:
    """A file object that writes part of what it is given, then fails like a full disk."""

    def __init__(self, fh, allow: int) -> None:
        self.fh, self.allow = fh, allow

    def write(self, text: str) -> int:
        if len(text) > self.allow:
            self.fh.write(text[: self.allow])
            self.fh.flush()
            raise OSError(28, "No space left on device")
        self.allow -= len(text)
        return self.fh.write(text)

    def __getattr__(self, name):
        return getattr(self.fh, name)


def test_a_failed_write_cuts_the_file_back_to_whole_lines_and_counts_what_was_lost(tmp_path):
    """A log whose writing failed is never committed: the older tracks.jsonl stays (it was
    once replaced by the incomplete file) and the whole lines stay in the kept partial."""
    (tmp_path / "tracks.jsonl").write_text("older\n")
    log = TrackLog(tmp_path / "tracks.jsonl")
    log.write(_t("a:0:1"))
    log._fh = _FullDisk(log._fh, allow=8)
    with pytest.raises(OutputError, match="No space left on device"):
        log.write(_t("a:0:2"))
    log.write(_t("a:0:3"))  # after a failure: counted, not attempted
    assert log.written == 1 and log.lost == 2
    with pytest.raises(OutputError, match="No space left on device"):
        log.commit()
    assert (tmp_path / "tracks.jsonl").read_text() == "older\n"
    assert log.kept == tmp_path / "tracks.jsonl.partial"
    assert log.kept.read_text() == _t("a:0:1").model_dump_json() + "\n"
    assert "the 1 track was written before the failure, kept in" in log.kept_note()


def test_a_second_lock_on_a_folder_names_the_holder_and_a_released_one_is_free(tmp_path):
    from tracklens.pipeline.outputs import OutputLock

    with OutputLock(tmp_path / "out"):
        with pytest.raises(OutputError, match=f"in use by process {os.getpid()} \\(another tracklens run\\)"):
            OutputLock(tmp_path / "out")
    assert not (tmp_path / "out" / ".tracklens.lock").exists()
    OutputLock(tmp_path / "out").close()


def test_output_checks_create_nothing_and_name_the_problem(tmp_path):
    video = tmp_path / "in.mp4"
    video.write_bytes(b"x")
    assert check_output_folder(tmp_path / "a" / "b", "tracks.jsonl") == tmp_path / "a" / "b" / "tracks.jsonl"
    assert not (tmp_path / "a").exists()
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output_folder(video / "sub", "tracks.jsonl")
    with pytest.raises(OutputError, match="is the input video"):
        check_video_output(tmp_path / "." / "in.mp4", inputs=(video,))
    os.symlink(video, tmp_path / "link.mp4")
    with pytest.raises(OutputError, match="is the input video"):
        check_video_output(tmp_path / "link.mp4", inputs=(video,))
    with pytest.raises(OutputError, match="'.avi' is not a video container"):
        check_video_output(tmp_path / "x.avi")
    with pytest.raises(OutputError, match="not writable"):
        check_output_folder(__import__("pathlib").Path("/proc/tracklens-out"), "tracks.jsonl")
