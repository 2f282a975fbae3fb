"""The inputs and the folder of a ``tracklens finetune`` run: manifests read with their skipped
rows named, the train/validation split, and the run folder's record of what it holds."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from ..errors import InputError, OutputError

__all__ = ["RunFolder", "check_folder", "load_samples", "manifest_row", "prepare_rows", "split_rows", "warn_skipped"]

#: Invalid or skipped rows named one by one before the rest are only counted.
_SHOWN = 5


def split_rows(samples: list, share: float, seed: int) -> tuple[list[int], list[int], str]:
    """Training and validation row indices, and how they were split.

    With an ``identity`` column, whole identities go to one side (a row without one is its
    own identity): an identity is held out when a hash of the seed and its name falls below
    ``share``, so the split does not change as rows are added. Without, rows are shuffled
    by the seed and the first ``share`` held out. Each side keeps at least one row (one
    identity).
    """
    n = len(samples)
    if n < 2:
        raise InputError("fine-tuning needs at least 2 rows to hold some out for validation (or give --val)")
    if any(s.identity for s in samples):
        names = [s.identity or f"\0row{i}" for i, s in enumerate(samples)]
        unique = sorted(set(names))
        if len(unique) < 2:
            raise InputError("every row has the same identity: nothing can be held out for validation (give --val)")

        def draw(name: str) -> float:
            return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "big") / 2**64

        held = {name for name in unique if draw(name) < share}
        if not held:
            held = {min(unique, key=draw)}
        if held == set(unique):
            held.discard(max(unique, key=draw))
        val = [i for i, name in enumerate(names) if name in held]
        return [i for i in range(n) if names[i] not in held], val, "identity"
    import numpy as np

    order = np.random.default_rng(seed).permutation(n)
    k = min(n - 1, max(1, round(share * n)))
    return sorted(int(i) for i in order[k:]), sorted(int(i) for i in order[:k]), "rows"


def manifest_row(sample) -> dict:
    row = {"image": str(Path(sample.image).resolve())}
    for name in ("face_box", "body_box"):
        box = getattr(sample, name)
        if box is not None:
            row[name] = [round(float(v), 3) for v in box]
    for name in ("age", "gender", "expression", "identity"):
        if getattr(sample, name) is not None:
            row[name] = getattr(sample, name)
    return row


class RunFolder:
    """The run folder and what it holds."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def started(self) -> bool:
        return (self.path / "run.json").is_file()

    @property
    def finished(self) -> bool:
        return (self.path / "report.json").is_file()

    def write(self, name: str, text: str) -> None:
        from ..evaluation.run import write_atomic

        write_atomic(self.path / name, text)

    def read_json(self, name: str) -> dict:
        try:
            return json.loads((self.path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise InputError(f"{self.path / name} cannot be read: {err}") from None


def check_folder(out: Path, resume: bool) -> RunFolder:
    from ..outputs import check_output_folder

    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; give a folder for the run")
    check_output_folder(out, "run.json", flag="--out")
    folder = RunFolder(out)
    if folder.started and not resume:
        raise OutputError(f"--out {out} holds a fine-tuning run already: add --resume to continue it, or give another --out")
    if resume and not folder.started:
        raise InputError(f"--resume: {out} holds no fine-tuning run to resume (no run.json)")
    if not resume and out.is_dir() and any(out.iterdir()):
        raise OutputError(f"--out {out} is not empty; give a new or empty folder for the run")
    return folder


def warn_skipped(messages: list[str], what: str, say: Callable[[str], None]) -> None:
    """A warning per skipped row, the first few named and the rest counted."""
    for message in messages[:_SHOWN]:
        say(f"tracklens: warning: {message}; row skipped")
    if len(messages) > _SHOWN:
        say(f"tracklens: warning: ... and {len(messages) - _SHOWN} more {what} rows skipped (all listed in run.json)")


def load_samples(path: str, say: Callable[[str], None], what: str) -> tuple[list, list[str]]:
    from ..evaluation.manifest import load_manifest

    skipped: list[str] = []
    samples = load_manifest(path, skipped=skipped)
    warn_skipped(skipped, what, say)
    return samples, skipped


def prepare_rows(samples: list, detector, crop_cfg, say: Callable[[str], None]) -> tuple[list[int], list, list[str]]:
    """Find each training row's face (as eval does) and keep how, not the crop: crops are cut
    again from the images batch by batch. Returns the usable row indices, the prepared rows
    (crop-less) and the invalid rows' messages."""
    from ..evaluation.prepare import RowCrop, build_crops
    from ..evaluation.run import CHUNK_ROWS

    rows: list = []
    for start in range(0, len(samples), CHUNK_ROWS):
        chunk = build_crops(samples[start : start + CHUNK_ROWS], detector, crop_cfg, start=start)
        rows += [RowCrop(None, r.face, r.found, r.invalid) for r in chunk]
    invalid = [f"{samples[i].where}: {r.invalid}" for i, r in enumerate(rows) if r.face is None]
    warn_skipped(invalid, "training", say)
    return [i for i, r in enumerate(rows) if r.face is not None], rows, invalid
