"""The control plane's records: what should run (:class:`StreamSpec`), who runs it
(:class:`Owner`), how it is doing (:class:`StreamStatus`), and the state an owner saves for the
next one (:class:`Snapshot`, with a file job's :class:`JobPosition`). Typed, versioned where
they outlive an upgrade, and read back by :class:`~.control.ControlPlane`.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..urls import redact_url

__all__ = ["JobPosition", "Owner", "SNAPSHOT_VERSION", "Snapshot", "StreamOptions", "StreamSpec", "StreamState", "StreamStatus",
           "new_id"]  # fmt: skip


def new_id(kind: str) -> str:
    """A fresh id usable as a stream id: ``s-1a2b3c4d`` for streams, ``j-...`` for jobs."""
    return f"{kind[0]}-{uuid.uuid4().hex[:8]}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Model):
    """Per-stream settings a client may give."""

    fps: float | None = Field(None, gt=0, le=60, description="analysis rate cap; default: the service's")
    check: bool = Field(True, description="refuse the stream if its host does not answer now")


class StreamSpec(_Model):
    """What should run: a live stream (until deleted) or a file job (until its end).

    ``url`` is kept as given, credentials included (the ingest needs them); everything shown
    to clients goes through :meth:`public`. ``generation`` is set by :meth:`ControlPlane.add`:
    a stream deleted and added again under the same id is another generation.
    """

    id: str
    kind: Literal["stream", "job"]
    url: str
    name: str | None = None
    options: StreamOptions = StreamOptions()
    created_at: float = Field(default_factory=time.time)
    generation: str = ""

    def public(self) -> dict:
        return {**self.model_dump(exclude={"generation"}), "url": redact_url(self.url)}


class Owner(_Model):
    """The ingest process that runs a stream, as statuses show it. Leases and heartbeats
    carry its :attr:`id`; nothing parses that id back."""

    name: str = Field(min_length=1, description="the process's name: its Serve replica id in the service")
    host: str | None = Field(None, description="its host name (None: a status written before owners were typed)")
    pid: int | None = Field(None, description="its process id (None: as for host)")
    node: str | None = Field(None, description="the machine it runs on (the Ray node id in the service)")

    @classmethod
    def here(cls, name: str, node: str | None = None) -> Owner:
        """This process, under ``name``."""
        return cls(name=name, host=socket.gethostname(), pid=os.getpid(), node=node)

    @property
    def id(self) -> str:
        """Unique per process: the owner in leases and heartbeats."""
        return f"{self.name}@{self.host}:{self.pid}"

    def __str__(self) -> str:
        return self.id


#: Where a stream or job is: ``pending`` (nobody runs it yet), ``connecting`` / ``live`` /
#: ``reconnecting`` (a live source), ``running`` (a file job), ``done``, ``failed``, ``stopped``
#: (a deleted stream, its tracks ended), ``cancelled`` (a job).
StreamState = Literal["pending", "connecting", "live", "reconnecting", "running", "done", "failed", "stopped", "cancelled"]


class StreamStatus(_Model):
    """How a stream or job is doing, as its owner last published it."""

    id: str
    kind: Literal["stream", "job"] = "stream"
    generation: str = Field("", description="the generation of the spec it describes (not shown by the API)")
    state: StreamState = "pending"
    owner: Owner | None = None
    fps: float = Field(0.0, description="frames analysed per second, recently")
    frames_decoded: int = 0
    frames_analysed: int = 0
    frames_dropped: int = 0
    queued_frames: int = Field(0, description="frames decoded and waiting for analysis (live streams)")
    reconnects: int = 0
    last_error: str | None = None
    tracks_active: int = 0
    estimators: str = Field("specialist only", description="which estimators answer: mllm+specialist, or specialist only")
    frames_expected: int | None = Field(None, description="jobs: frames the file should give")
    progress: float | None = Field(None, description="jobs: share done, 0-1")
    updated_at: float = Field(default_factory=time.time)

    @model_validator(mode="before")
    @classmethod
    def _untyped_owner(cls, data):
        """A status written before owners were typed (the owner's id as a string, its node
        beside it) still reads, as far as it says: the owner's name is that id."""
        if isinstance(data, dict) and ("node" in data or isinstance(data.get("owner"), str)):
            data = dict(data)
            node = data.pop("node", None)
            if isinstance(data.get("owner"), str):
                data["owner"] = {"name": data["owner"], "node": node}
        return data


#: The layout of :class:`Snapshot`; a snapshot saved under another one (an older tracklens) is
#: recognised and not restored: the stream starts afresh, in a new epoch. Version 3: crop
#: budgets carry what each track still needs and the quality last asked about (a file job's
#: position came later, as an optional field: a job's snapshot without it is not restored).
SNAPSHOT_VERSION = 3


class JobPosition(_Model):
    """Where a file job was when its snapshot was saved, and its tallies up to there: a job
    taken over goes on after ``frame``, and its result counts the whole job."""

    frame: int = Field(-1, description="the index of the last frame analysed (-1: none)")
    frames_analysed: int = 0
    tracks_ended: int = 0
    answered: dict[str, int] = Field(default_factory=dict, description="estimates applied, per source")
    invalid: dict[str, int] = Field(default_factory=dict, description="those not usable, per reason")
    seconds: float = Field(0.0, description="how long it had run")


class Snapshot(_Model):
    """A stream's saved perception state, with the generation and the claim token of the
    owner that saved it (a snapshot of another generation is never restored); a file job's
    also says where in the file it was."""

    version: int = SNAPSHOT_VERSION
    generation: str
    token: int
    state: dict
    job: JobPosition | None = None
