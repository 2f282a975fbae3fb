"""What the API admits as streams and jobs: schemes, reachable hosts, files only inside roots."""

from __future__ import annotations

import os
import socket

import pytest
from tracklens.pipeline.config import ApiConfig
from tracklens.pipeline.errors import InputError
from tracklens.pipeline.service.admission import admit_job_path, admit_stream_url


def test_stream_urls_need_an_allowed_scheme_and_a_host_that_answers():
    cfg = ApiConfig()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert admit_stream_url(f"rtsp://user:pw@127.0.0.1:{port}/cam", cfg) == f"rtsp://user:pw@127.0.0.1:{port}/cam"
    with pytest.raises(InputError, match=r"rtsp://\*\*\*@127.0.0.1:1/cam: cannot reach 127.0.0.1:1 \(Connection refused\)") as err:
        admit_stream_url("rtsp://user:secret@127.0.0.1:1/cam", cfg)
    assert "secret" not in str(err.value)
    assert admit_stream_url("rtsp://127.0.0.1:1/cam", cfg, check=False)
    with pytest.raises(InputError, match="the scheme ftp:// is not allowed"):
        admit_stream_url("ftp://cam/x", cfg)
    with pytest.raises(InputError, match="submit files as jobs"):
        admit_stream_url("file:///etc/passwd", cfg)
    with pytest.raises(InputError, match="rtmp:// is not allowed"):
        admit_stream_url("rtmp://cam/live", ApiConfig(schemes=("rtsp",)))


def test_job_paths_must_be_files_inside_a_root(tmp_path):
    root = tmp_path / "videos"
    (root / "day1").mkdir(parents=True)
    video = root / "day1" / "a.mp4"
    video.write_bytes(b"x")
    (tmp_path / "secret.mp4").write_bytes(b"x")
    os.symlink(tmp_path / "secret.mp4", root / "link.mp4")
    cfg = ApiConfig(file_roots=(root,))
    assert admit_job_path(str(video), cfg) == video.resolve()
    assert admit_job_path(f"file://{video}", cfg) == video.resolve()
    for escape in (str(root / ".." / "secret.mp4"), str(root / "link.mp4"), "/etc/passwd"):
        with pytest.raises(InputError, match="outside the folders this service may read"):
            admit_job_path(escape, cfg)
    with pytest.raises(InputError, match="no such file"):
        admit_job_path(str(root / "none.mp4"), cfg)
    with pytest.raises(InputError, match="is not a file"):
        admit_job_path(str(root / "day1"), cfg)
    with pytest.raises(InputError, match="absolute path"):
        admit_job_path("day1/a.mp4", cfg)
    with pytest.raises(InputError, match="file jobs are disabled"):
        admit_job_path(str(video), ApiConfig())
