"""onnxruntime sessions with the providers a session really got, and clear load errors."""

from __future__ import annotations

import logging
from pathlib import Path

from .errors import ModelError

__all__ = ["load_session", "shrink_arena"]

log = logging.getLogger(__name__)


def load_session(path: Path, threads: int = 0):
    """An ``InferenceSession`` on the best available provider (CUDA first, then CPU).

    ``onnxruntime-gpu`` lists CUDA on machines without a GPU and silently falls back, so the
    providers are read back from the session, never assumed from the build.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    # Idle intra-op threads spin by default, burning a core between runs; the pipeline calls
    # its models in short bursts beside other work (decoding, other streams), so they sleep.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    wanted = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=wanted)
    except Exception as err:  # onnxruntime raises its own untyped errors for bad files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"cannot load model file {path}: {first}; run `tracklens models pull --force`") from None
    log.debug("%s runs on %s", path.name, session.get_providers())
    return session


def shrink_arena(session, feed: dict) -> None:
    """Hand back the memory ``session``'s CPU arena holds beyond what running calls use.

    onnxruntime's arena grows to the largest inputs and the most concurrent calls a session
    has seen (a tiled SSDLite scan of 4 queued frames took 530 MB) and never shrinks by
    itself. Shrinking is a per-call option, applied at the end of that call: ``feed`` is one
    small input, run once with it, and every arena region no call is using goes back to the
    heap (all but the arena's first region). Shrinking on every call instead would cost
    40-60% more per call (each call would map and fault in its buffers anew), so this runs
    only when a stream goes.
    """
    import onnxruntime as ort

    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    session.run(None, feed, options)
