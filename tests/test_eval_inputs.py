"""`tracklens eval` on inputs as users have them: 16-bit grey photos, a CSV saved by a
spreadsheet (with a byte order mark), and a manifest long enough to want a progress bar and
to be stopped halfway. Real files, the real command in a subprocess."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

pytestmark = pytest.mark.integration

#: The astronaut's face in the photo scaled to 384 x 384 (as in test_evaluation.py).
_FACE_384 = [134, 62, 200, 128]


def _photo(tmp_path: Path, astronaut: np.ndarray, name: str = "astronaut.png") -> Path:
    from PIL import Image

    Image.fromarray(astronaut).resize((384, 384)).save(tmp_path / name)
    return tmp_path / name


def test_a_16_bit_grey_photo_is_read_at_its_real_depth(tmp_path, astronaut):
    """Regression: a 16-bit grey PNG was read as a white image (Pillow clips each 16-bit value
    to 255 when it converts to RGB), so its row's answers were about a blank picture. The same
    photo in 8 and in 16 bits now gets the same answers."""
    from PIL import Image

    grey = np.asarray(Image.open(_photo(tmp_path, astronaut)).convert("L"))
    Image.fromarray(grey).save(tmp_path / "grey8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I;16")  # really 16 bits on disk
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"image": n, "face_box": _FACE_384, "age": 42}) + "\n" for n in ("grey8.png", "grey16.png")))
    out, predictions = tmp_path / "r.json", tmp_path / "p.jsonl"
    result = run_cli("eval", str(manifest), "--estimator", "specialist", "--out", str(out), "--predictions", str(predictions))
    assert result.returncode == 0, result.stderr
    eight, sixteen = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert sixteen["face"] == "face_given" and sixteen["valid"] is True
    for key in ("age", "p_female", "expression", "expression_p"):
        assert sixteen[key] == eight[key], key


def test_a_csv_manifest_with_a_byte_order_mark_is_read(tmp_path, astronaut):
    """Regression: a CSV saved as "UTF-8 with BOM" (Excel's CSV UTF-8) has the mark glued to its
    first column's name, so the header seemed to have no image column. No progress bar when
    stderr is not a terminal (a log file gets no carriage-return noise)."""
    _photo(tmp_path, astronaut)
    manifest = tmp_path / "people.csv"
    manifest.write_bytes("\ufeffimage,face_box,age\nastronaut.png,134 62 200 128,42\n".encode())
    result = run_cli("eval", str(manifest), "--estimator", "specialist", "--out", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "r.json").read_text())["estimators"]["specialist"]["age"]["n"] == 1
    assert "row/s" not in result.stderr and "\r" not in result.stderr


def _rows_done(text: str, total: int) -> int:
    return max((int(n) for n in re.findall(rf"(\d+)/{total} \[", text)), default=0)


def _read_all(fd: int) -> str:
    text = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        text += chunk
    return text.decode(errors="replace")


def test_a_long_eval_shows_progress_and_a_stop_keeps_the_rows_done(tmp_path, astronaut):
    """Regression: a 5,000-row eval showed nothing until its end, and SIGTERM (or Ctrl-C) lost
    every row evaluated so far. Now a bar counts rows on the terminal, and a stop writes the
    report and the predictions of the rows done, marked partial, with status 143."""
    _photo(tmp_path, astronaut)
    total = 5000
    manifest = tmp_path / "many.csv"
    manifest.write_text("image,face_box,age,gender\n" + "astronaut.png,134 62 200 128,42,female\n" * total)
    out, predictions = tmp_path / "r.json", tmp_path / "p.csv"
    env = {k: v for k, v in os.environ.items() if k != "TRACKLENS_REDIS_URL"}
    terminal, child_side = pty.openpty()  # stderr is a terminal, as a user's is, 120 columns wide
    fcntl.ioctl(child_side, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracklens.pipeline.cli", "eval", str(manifest), "--estimator", "specialist", "--out", str(out),
         "--predictions", str(predictions)],
        stdout=subprocess.PIPE, stderr=child_side, text=True, env=env,
    )  # fmt: skip
    os.close(child_side)
    seen = ""
    while _rows_done(seen, total) < 48:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk.decode(errors="replace")
    assert _rows_done(seen, total) >= 48, f"no progress bar: {seen[-2000:]!r}"
    proc.send_signal(signal.SIGTERM)
    stderr = seen + _read_all(terminal)
    stdout = proc.stdout.read()
    assert proc.wait(timeout=300) == 143, stderr[-3000:]
    os.close(terminal)
    assert "Traceback" not in stderr
    assert "terminated (SIGTERM); the rows evaluated up to that point were kept, in a report marked partial" in stderr
    document = json.loads(out.read_text())
    done = document["partial"]["rows_evaluated"]
    assert document["partial"] == {"rows_evaluated": done, "rows_in_manifest": total, "stopped_by": "SIGTERM"}
    assert 48 <= done < total
    assert stdout.startswith(f"PARTIAL: the first {done} of {total} rows")
    report = document["estimators"]["specialist"]
    assert report["rows"] == report["n"] == report["age"]["n"] == done
    rows = list(csv.DictReader(predictions.read_text().splitlines()))
    assert [r["row"] for r in rows] == [f"{manifest}:{line}" for line in range(2, done + 2)]
    mae = np.mean([abs(float(r["age"]) - 42) for r in rows])
    assert report["age"]["mae"] == pytest.approx(mae, abs=0.01)  # the metrics are those of the rows done
