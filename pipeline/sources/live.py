"""Live sources (RTSP, RTMP, HTTP(S) streams) through PyAV, which never fall behind real time.

A decode thread connects, decodes every frame, keeps those the fps cap lets through and puts
them in a small queue; analysis takes them from there. When analysis is slower than the
camera, the queue drops its oldest frames (counted) instead of growing, so what is analysed is
always the present. When the server goes away, PyAV's decode loop just ends, with no error:
for a live source that is a disconnect like any other, and the thread reconnects with
exponential backoff and jitter until the stream is back, it is closed, or it has been gone for
``max_outage_s``.

States: ``connecting`` (first open), ``live``, ``reconnecting``, ``stopped`` (closed),
``failed`` (gave up). Frame times are wall-clock seconds (``time.time()``): a camera's own
timestamps restart at every reconnect. The URL's credentials never appear in logs, states or
errors.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Literal

from ..config import LiveSourceConfig
from ..errors import InputError
from ..types import Frame
from ..urls import parse_url, shown_url
from .base import FpsCap, upright

__all__ = ["LIVE_SCHEMES", "LiveSource", "LiveStats"]

log = logging.getLogger(__name__)

#: URL schemes read as live streams.
LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https")


@dataclass
class LiveStats:
    """What a live source did so far (a copy is safe to read from any thread).

    Attributes:
        state: connecting, live, reconnecting, stopped or failed.
        frames_decoded: every frame decoded.
        frames_analysed: frames handed on to analysis.
        frames_dropped: frames the fps cap kept but analysis never took (it fell behind).
        reconnects: attempts to reconnect after a disconnect.
        last_error: the most recent failure, one line, without credentials.
        since: wall-clock time of the last state change.
    """

    state: Literal["connecting", "live", "reconnecting", "stopped", "failed"] = "connecting"
    frames_decoded: int = 0
    frames_analysed: int = 0
    frames_dropped: int = 0
    reconnects: int = 0
    last_error: str | None = None
    since: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class LiveSource:
    """A :class:`~.base.FrameSource` over a live URL; see the module docstring.

    Args:
        url: ``rtsp://``, ``rtsps://``, ``rtmp://``, ``http(s)://`` ... (checked by
            :func:`~tracklens.pipeline.urls.parse_url`; the scheme compared in any case)
        stream: stream id given to the frames.
        fps: analysis rate cap (None: every decoded frame is offered).
        config: timeouts, reconnect backoff, queue size.

    Raises:
        InputError: the URL is malformed (nothing is connected to then).
    """

    time_base = "wall"  # frame times are wall-clock seconds: a camera's own restart at every reconnect

    def __init__(self, url: str, stream: str = "video", fps: float | None = 10.0, config: LiveSourceConfig | None = None) -> None:
        self.url = parse_url(url, LIVE_SCHEMES, "stream URL")  # before anything connects: see pipeline/urls.py
        self.shown = shown_url(self.url)
        self.stream = stream
        self.config = config or LiveSourceConfig()
        self._fps = fps
        self._queue: deque[Frame] = deque(maxlen=self.config.queue_frames)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._stats = LiveStats(since=time.time())
        self._nominal: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"live-{stream}", daemon=True)
        self._thread.start()

    # -- the FrameSource contract ------------------------------------------------------------

    @property
    def analysis_fps(self) -> float:
        """The cap, or the stream's own rate when it is lower (25 until it is known)."""
        nominal = self._nominal or 25.0
        return min(nominal, self._fps) if self._fps else nominal

    @property
    def stats(self) -> LiveStats:
        with self._cond:
            return LiveStats(**asdict(self._stats))

    @property
    def queued(self) -> int:
        """Frames decoded and waiting for analysis (at most ``queue_frames``)."""
        with self._cond:
            return len(self._queue)

    @property
    def error(self) -> str | None:
        """Why the source gave up (state ``failed``), else None."""
        stats = self.stats
        return f"gave up after {self.config.max_outage_s:g} s without a frame ({stats.last_error})" if stats.state == "failed" else None

    def wait_live(self, timeout_s: float | None = None) -> None:
        """Block until the first frame is decoded.

        Raises:
            InputError: the first attempt to open the stream failed, or brought no frame
                within ``timeout_s`` (default: the open timeout plus a second); the message
                names the URL without credentials.
        """
        timeout_s = self.config.open_timeout_s + 1.0 if timeout_s is None else timeout_s
        with self._cond:
            # the first attempt's outcome: a frame, or a failure (reconnecting, failed, stopped)
            ok = self._cond.wait_for(lambda: self._stats.frames_decoded > 0 or self._stats.state not in ("connecting", "live"),
                                     timeout_s)  # fmt: skip
            if ok and self._stats.frames_decoded > 0:
                return
            why = self._stats.last_error or f"no frame within {timeout_s:g} s"
        raise InputError(f"cannot open the live stream {self.shown}: {why}")

    def read(self, max_frames: int, timeout_s: float) -> list[Frame]:
        """Up to ``max_frames`` queued frames, oldest first, waiting at most ``timeout_s`` for
        the first; [] on timeout or once the source is closed or has given up. A consumer
        that keeps up gets one frame at a time (low latency); one that falls behind gets the
        whole queue at once (bigger batches)."""
        with self._cond:
            self._cond.wait_for(lambda: self._queue or self._stop.is_set() or self._stats.state in ("stopped", "failed"), timeout_s)
            if self._stop.is_set():
                return []
            frames = [self._queue.popleft() for _ in range(min(max_frames, len(self._queue)))]
            self._stats.frames_analysed += len(frames)
            return frames

    @property
    def done(self) -> bool:
        """The source will give no more frames (closed, or gave up)."""
        return self._stop.is_set() or self._stats.state in ("stopped", "failed")

    def __iter__(self) -> Iterator[Frame]:
        """Frames as analysis can take them; ends when the source is closed or gives up."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stop.is_set() or self._stats.state in ("stopped", "failed"))
                if not self._queue or self._stop.is_set():
                    return
                frame = self._queue.popleft()
                self._stats.frames_analysed += 1
            yield frame

    def stop(self) -> None:
        """End iteration now (from any thread); decoding stops within the read timeout."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """Stop, wait for the decode thread to end, and let go of the frames still queued."""
        self.stop()
        self._thread.join(timeout=self.config.read_timeout_s + 2.0)
        with self._cond:
            self._queue.clear()  # up to queue_frames frames (2.7 MB each at 720p), held as long as the source object

    def __enter__(self) -> LiveSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the decode thread -------------------------------------------------------------------

    def _set(self, **changes) -> None:
        with self._cond:
            if "state" in changes and changes["state"] != self._stats.state:
                changes["since"] = time.time()
                log.info("%s: %s", self.shown, changes["state"])
            for name, value in changes.items():
                setattr(self._stats, name, value)
            self._cond.notify_all()

    def _run(self) -> None:
        import av

        delay = self.config.reconnect_s
        outage_since: float | None = None
        while not self._stop.is_set():
            got_frames = False
            try:
                container = self._open(av)
                try:
                    got_frames = self._read(container)
                finally:
                    container.close()
                if not self._stop.is_set():
                    self._set(last_error="the stream ended (the server closed it or went away)")
            except (av.FFmpegError, OSError) as err:
                self._set(last_error=_reason(err, self.url, self.shown))
            except Exception as err:  # never let the thread die silently: the stream would hang
                log.exception("%s: unexpected error in the decode thread", self.shown)
                self._set(last_error=f"{type(err).__name__}: {_reason(err, self.url, self.shown)}")
            if self._stop.is_set():
                break
            if got_frames:
                delay, outage_since = self.config.reconnect_s, None
            outage_since = outage_since or time.monotonic()
            limit = self.config.max_outage_s
            if limit is not None and time.monotonic() - outage_since >= limit:
                self._set(state="failed")
                log.warning("%s: giving up after %.0f s without a frame: %s", self.shown, limit, self._stats.last_error)
                return
            wait = delay * (1.0 + self.config.jitter * (2.0 * random.random() - 1.0))
            self._set(state="reconnecting")
            # before the first frame, the caller of wait_live() reports the failure itself
            level = logging.WARNING if self._stats.frames_decoded else logging.DEBUG
            log.log(level, "%s: %s; reconnecting in %.1f s", self.shown, self._stats.last_error, wait)
            if self._stop.wait(wait):
                break
            with self._cond:
                self._stats.reconnects += 1
            delay = min(self.config.max_reconnect_s, delay * 2.0)
        self._set(state="stopped")

    def _open(self, av):
        cfg = self.config
        options = {"analyzeduration": str(int(cfg.probe_s * 1e6)), "probesize": "500000"}
        if self.url.startswith(("rtsp://", "rtsps://")):
            options.update(rtsp_transport=cfg.rtsp_transport, timeout=str(int(cfg.read_timeout_s * 1e6)))
        container = av.open(self.url, options=options, timeout=(cfg.open_timeout_s, cfg.read_timeout_s))
        if not container.streams.video:
            container.close()
            raise InputError(f"{self.shown} holds no video stream")
        return container

    def _read(self, container) -> bool:
        """Decode until the stream ends or the source is closed; True if any frame came."""
        video = container.streams.video[0]
        video.thread_type = "AUTO"
        rate = float(video.average_rate or video.guessed_rate or 0)
        self._nominal = rate or self._nominal
        cap = FpsCap(self._fps)
        got = False
        for frame in container.decode(video):
            if self._stop.is_set():
                break
            now = time.time()
            with self._cond:
                self._stats.frames_decoded += 1
                index = self._stats.frames_decoded - 1
            if not got:
                got = True
                self._set(state="live")  # last_error stays: the status shows what the last outage was
            if not cap.keep(time.monotonic()):
                continue
            image = upright(frame.to_ndarray(format="rgb24"), frame.rotation)  # a camera mounted on its side
            with self._cond:
                if len(self._queue) == self._queue.maxlen:
                    self._stats.frames_dropped += 1  # analysis fell behind: the oldest goes
                self._queue.append(Frame(self.stream, index, now, now, image))
                self._cond.notify_all()
        return got


def _reason(err: BaseException, url: str, shown: str) -> str:
    """One line about ``err``, with the URL's credentials taken out."""
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return str(text).splitlines()[0].replace(url, shown)
