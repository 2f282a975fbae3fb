"""The HTTP API: FastAPI routes over the control plane and the track store.

Built by :func:`make_api` (tested with FastAPI's TestClient, no Ray), served by the ``Api``
deployment on Ray Serve's proxy. It answers from Redis only: desired streams and jobs, their
statuses, tracks, events, demographics, live previews; it never calls the replica that owns a
stream. It also serves the console (:mod:`.console`): static files, open without the key, whose
pages fetch everything else with it. Every error is JSON
``{"error": "..."}``: validation 422, unknown id 404, a name already taken 409, a finished job
cancelled 409, a body over the limit 413, overload or an unreachable store 503 with
``Retry-After``, a missing or wrong API key 401 (checked before anything else, see
:mod:`.guard`). Errors quote at most a short, redacted excerpt of what the client sent.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Literal
from urllib.parse import urlsplit

from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from tracklens.pipeline.config import ServeConfig, check_stream_id
from tracklens.pipeline.demographics import BUCKETS_S, BucketCounts, bucket_count
from tracklens.pipeline.errors import InputError, StoreError
from tracklens.pipeline.service.admission import admit_job_path, admit_stream_url
from tracklens.pipeline.service.control import ControlPlane, StreamOptions, StreamSpec, StreamStatus, new_id
from tracklens.pipeline.store import TrackStore
from tracklens.pipeline.summary import EstimatePoint, TrackSummary
from tracklens.pipeline.urls import MAX_URL_CHARS, excerpt, quoted

from .console import ConsoleFiles
from .guard import RequestGuard
from .metrics import render_metrics

__all__ = ["make_api"]


class StreamRequest(BaseModel):
    """``POST /v1/streams``: a live stream to watch."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(max_length=MAX_URL_CHARS, description="rtsp://, rtsps://, rtmp://, http(s):// (credentials allowed: never shown back)")
    name: str | None = Field(None, max_length=64, description="the stream id (1-64 of A-Z a-z 0-9 . _ -); default: generated")
    options: StreamOptions = StreamOptions()


class JobRequest(BaseModel):
    """``POST /v1/jobs``: a video file to analyse once."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(max_length=4096, description="absolute path inside one of the service's file roots")
    name: str | None = Field(None, max_length=64)
    options: StreamOptions = StreamOptions()


def _error(status: int, message: str, retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def make_api(
    config: ServeConfig, control: ControlPlane, store: TrackStore, api_key: str | None, health: Callable[[], dict]
) -> FastAPI:
    """The API over ``control`` and ``store``; ``api_key`` None leaves it open; ``health``
    adds to ``/healthz`` what only the deployment knows (estimators, ingest replicas)."""
    app = FastAPI(title="tracklens", description="People tracked on live streams and files: age, gender, expression")
    console = ConsoleFiles()
    app.add_middleware(RequestGuard, api_key=api_key, max_body_bytes=config.api.max_body_bytes,
                       open_paths=frozenset({"/healthz", *console.paths}))  # fmt: skip
    retry = config.api.retry_after_s
    capacity = config.ingest.replicas * config.ingest.max_streams

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        where = excerpt(".".join(str(p) for p in first.get("loc", ()) if p != "body"), 40)
        message = excerpt(str(first.get("msg", "invalid")), 120)
        return _error(422, f"{where}: {message}" if where else message)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, err: HTTPException) -> JSONResponse:
        response = _error(err.status_code, str(err.detail))
        for name, value in (err.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(StoreError)
    async def _store(request: Request, err: StoreError) -> JSONResponse:
        return _error(503, f"the store is unavailable: {err}", retry)

    def _stream(stream_id: str, kind: str = "stream") -> StreamSpec:
        spec = control.spec(stream_id)
        if spec is None or spec.kind != kind:
            raise HTTPException(404, f"no {kind} {quoted(stream_id)}")
        return spec

    def _view(spec: StreamSpec) -> dict:
        status = control.status(spec.id, spec.generation) or StreamStatus(id=spec.id, kind=spec.kind)
        return {**spec.public(), "status": status.model_dump(exclude={"generation"})}

    def _check_name(name: str | None) -> None:
        if name is not None:
            try:
                check_stream_id(name)
            except ValueError as err:
                raise HTTPException(422, f"name: {err}") from None

    def _admit(kind: str, name: str | None, url: str, options: StreamOptions) -> StreamSpec:
        if len(control.specs()) >= capacity:
            raise HTTPException(503, f"no ingest capacity left ({capacity} streams and jobs run at once)", {"Retry-After": str(retry)})
        spec = control.add(StreamSpec(id=name or new_id(kind), kind=kind, url=url, name=name, options=options))
        if spec is None:
            raise HTTPException(409, f"a stream or job named {quoted(name or '')} exists")
        return spec

    store_url = urlsplit(config.store.url)
    own = ((config.api.host, config.api.port),) + (((store_url.hostname, store_url.port or 6379),) if store_url.hostname else ())

    @app.post("/v1/streams", status_code=201)
    def add_stream(body: StreamRequest) -> dict:
        _check_name(body.name)
        try:
            url = admit_stream_url(body.url, config.api, check=config.api.check_reachable and body.options.check, own=own)
        except InputError as err:
            raise HTTPException(422, str(err)) from None
        return _view(_admit("stream", body.name, url, body.options))

    @app.get("/v1/streams")
    def list_streams() -> list[dict]:
        return [_view(spec) for spec in sorted(control.specs().values(), key=lambda s: s.created_at) if spec.kind == "stream"]

    @app.get("/v1/streams/{stream_id}")
    def get_stream(stream_id: str) -> dict:
        return _view(_stream(stream_id))

    @app.delete("/v1/streams/{stream_id}", status_code=204)
    def delete_stream(stream_id: str) -> Response:
        _stream(stream_id)
        control.remove(stream_id)
        return Response(status_code=204)

    @app.get("/v1/streams/{stream_id}/tracks")
    def stream_tracks(
        stream_id: str,
        state: Literal["active", "ended"] | None = Query(None),
        since: float | None = Query(None, description="only tracks seen at or after this time (seconds)"),
        limit: int | None = Query(None, ge=1, le=10_000, description="only the newest N of the tracks that match (by first seen)"),
    ) -> list[TrackSummary]:
        if state == "active":
            tracks = store.active(stream_id)  # their own index: the ended ones are not read
        else:
            tracks = store.tracks(stream_id, newest=limit if state is None and since is None else None)
        if not tracks and control.spec(stream_id) is None and not store.tracks(stream_id, newest=1):
            raise HTTPException(404, f"no stream {quoted(stream_id)}")
        tracks = [t for t in tracks if (state is None or t.state == state) and (since is None or t.last_seen >= since)]
        return tracks[-limit:] if limit else tracks

    @app.get("/v1/streams/{stream_id}/stats")
    def stream_stats(
        stream_id: str,
        bucket: Literal["15m", "1h", "1d"] = Query("1h", description="bucket size; buckets are aligned on multiples of it (UTC days)"),
        start: float | None = Query(None, alias="from", description="seconds (Unix time on live streams); default: `to` minus 12 buckets"),
        to: float | None = Query(None, description="seconds; default: now"),
    ) -> dict:
        """People per bucket (the bucket of their first sighting) by gender, age band and
        expression; ended tracks as they were finally fused, active ones with their labels so
        far; labels not known yet count as ``unknown``."""
        size = BUCKETS_S[bucket]
        for name, value in (("from", start), ("to", to)):
            if value is not None and not (math.isfinite(value) and abs(value) <= _MAX_EPOCH_S):
                raise HTTPException(422, f"{name}: must be seconds since 1970, at most {_MAX_EPOCH_S:.0e} either way")
        end = time.time() if to is None else to
        begin = end - _DEFAULT_BUCKETS * size if start is None else start
        if begin >= end:
            raise HTTPException(422, "from: must be before to")
        n = bucket_count(size, begin, end)  # counted, not made: a wide range must cost nothing
        if n > _MAX_BUCKETS:
            raise HTTPException(422, f"from..to spans {n} buckets of {bucket}; at most {_MAX_BUCKETS} (choose a larger bucket)")
        _known_stream(stream_id)
        buckets = store.demographics(stream_id, size, begin, end)
        total = BucketCounts(start=buckets[0].start if buckets else 0)
        for b in buckets:
            total.merge(b)
        return {"stream": stream_id, "bucket": bucket, "bucket_s": size, "from": begin, "to": end,
                "buckets": [b.model_dump() for b in buckets], "total": total.model_dump(exclude={"start"})}  # fmt: skip

    def _known_stream(stream_id: str) -> None:
        """A stream (or job) that runs, or whose tracks are still on record; else 404."""
        try:
            check_stream_id(stream_id)
        except ValueError:
            raise HTTPException(404, f"no stream {quoted(stream_id)}") from None
        if control.spec(stream_id) is None and control.job(stream_id) is None and not store.tracks(stream_id, newest=1):
            raise HTTPException(404, f"no stream {quoted(stream_id)}")

    @app.get("/v1/streams/{stream_id}/preview.jpg")
    def stream_preview(stream_id: str) -> Response:
        """The stream's latest analysed frame with its people drawn (JPEG, at most
        ``ingest.preview_width_px`` wide). Asking marks the stream watched for
        ``ingest.preview_watch_s``; its ingest worker renders previews only meanwhile, so the
        first request after a pause gets 503 with ``Retry-After: 1``."""
        if not config.ingest.previews:
            raise HTTPException(404, "live previews are switched off on this service (ingest.previews: false)")
        spec = _stream(stream_id)
        jpeg = control.watch(stream_id, config.ingest.preview_watch_s)
        if jpeg is None:
            status = control.status(spec.id, spec.generation)
            state = status.state if status else "pending"
            raise HTTPException(503, f"no preview of stream {quoted(stream_id)} yet ({state}): one is rendered while someone "
                                     "watches; ask again in a second", {"Retry-After": "1"})  # fmt: skip
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    def _track_key(key: str) -> str:
        """A track key ``{stream}:{epoch}:{id}``; anything else names no track (404) and never
        becomes part of a Redis key."""
        if not _TRACK_KEY.fullmatch(key):
            raise HTTPException(404, f"no track {quoted(key)} (a track key is STREAM:EPOCH:ID)")
        return key

    @app.get("/v1/tracks/{key}")
    def get_track(key: str) -> TrackSummary:
        summary = store.get(_track_key(key))
        if summary is None:
            raise HTTPException(404, f"no track {quoted(key)} (unknown, or expired after its retention)")
        return summary

    @app.get("/v1/tracks/{key}/estimates")
    def track_estimates(key: str) -> list[EstimatePoint]:
        """The track's latest estimates (``store.estimates_kept``), oldest first: when, from
        which source and model, what each said."""
        if store.get(_track_key(key)) is None:
            raise HTTPException(404, f"no track {quoted(key)} (unknown, or expired after its retention)")
        return store.estimates(key)

    @app.get("/v1/tracks/{key}/face.jpg")
    def get_face(key: str) -> Response:
        if not config.ingest.store_face_crops:
            raise HTTPException(404, "face crops are not stored (ingest.store_face_crops is off)")
        data = control.face(_track_key(key))
        if data is None:
            raise HTTPException(404, f"no face crop for track {quoted(key)}")
        return Response(data, media_type="image/jpeg")

    @app.get("/v1/streams/{stream_id}/events")
    def stream_events(
        stream_id: str,
        since: str | None = Query(None, description="replay from after this event id (0: from the start; default: new events only)"),
        last_event_id: str | None = Header(None),
    ) -> StreamingResponse:
        start = last_event_id or since or "$"
        if not _EVENT_ID.fullmatch(start):
            which = "the Last-Event-ID header" if last_event_id else "since"
            raise HTTPException(422, f"{which}: {quoted(start)} is not an event id (0, MILLISECONDS or MILLISECONDS-SEQUENCE)")
        if control.spec(stream_id) is None and not store.tracks(stream_id):
            raise HTTPException(404, f"no stream {quoted(stream_id)}")
        key = f"{config.store.prefix}:stream:{stream_id}:events"
        return StreamingResponse(_sse(config.store.connect_url(), key, start), media_type="text/event-stream")

    @app.post("/v1/jobs", status_code=201)
    def add_job(body: JobRequest) -> dict:
        _check_name(body.name)
        try:
            path = admit_job_path(body.path, config.api)
        except InputError as err:
            raise HTTPException(422, str(err)) from None
        return _job_view(_admit("job", body.name, str(path), body.options))

    def _job_view(spec: StreamSpec) -> dict:
        status = control.status(spec.id, spec.generation) or StreamStatus(id=spec.id, kind="job")
        result = control.result(spec.id)
        return {"id": spec.id, "path": spec.url, "created_at": spec.created_at, "state": status.state,
                "progress": status.progress, "frames_expected": status.frames_expected,
                "frames_analysed": status.frames_analysed, "status": status.model_dump(exclude={"generation"}),
                "result": None if result is None else result.public()}  # fmt: skip

    @app.get("/v1/jobs")
    def list_jobs() -> list[dict]:
        return [_job_view(spec) for spec in control.jobs()]

    @app.get("/v1/jobs/{job_id}")
    def get_job(job_id: str) -> dict:
        spec = control.job(job_id)
        if spec is None:
            raise HTTPException(404, f"no job {quoted(job_id)}")
        return _job_view(spec)

    @app.get("/v1/jobs/{job_id}/tracks.jsonl")
    def job_tracks(job_id: str) -> Response:
        """The job's ended tracks as ``tracks.jsonl`` (one summary per line, by first seen),
        those so far while it runs."""
        if control.job(job_id) is None:
            raise HTTPException(404, f"no job {quoted(job_id)}")
        body = "".join(t.model_dump_json() + "\n" for t in store.tracks(job_id) if t.ended)
        return Response(body, media_type="application/x-ndjson",
                        headers={"Content-Disposition": f'attachment; filename="{job_id}-tracks.jsonl"'})  # fmt: skip

    @app.delete("/v1/jobs/{job_id}", status_code=202)
    def cancel_job(job_id: str) -> dict:
        """Cancel a pending or running job: its worker stops before its next frames, ends and
        writes the tracks so far, and records the job as ``cancelled``."""
        spec = control.job(job_id)
        if spec is None:
            raise HTTPException(404, f"no job {quoted(job_id)}")
        if not control.cancel_job(spec, config.store.ended_ttl_s):
            result = control.result(job_id)
            raise HTTPException(409, f"job {quoted(job_id)} has already ended ({result.state if result else 'ending'})")
        return _job_view(spec)

    @app.get("/v1/console")
    def console_settings() -> dict:
        """What the console shows and how: previews and face crops on or off, the bucket sizes,
        where job files may come from."""
        ingest = config.ingest
        return {"previews": ingest.previews, "preview_fps": ingest.preview_fps, "face_crops": ingest.store_face_crops,
                "buckets": list(BUCKETS_S), "file_roots": [str(p) for p in config.api.file_roots],
                "schemes": list(config.api.schemes)}  # fmt: skip

    console.mount(app)

    @app.get("/metrics")
    def metrics() -> Response:
        body, content_type = render_metrics(control)
        return Response(body, media_type=content_type)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        try:
            control.ping()
        except StoreError as err:
            return _error(503, f"the store is unavailable: {err}", retry)
        return JSONResponse({"status": "ok", **health()})

    return app


#: Demographics: buckets answered by default (before ``to``), and at most.
_DEFAULT_BUCKETS = 12
_MAX_BUCKETS = 2000
#: Stats times beyond this many seconds from 1970 (year ~5100) are refused.
_MAX_EPOCH_S = 1e11

#: A track key: a stream id, its epoch and the track's id.
_TRACK_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}:\d{1,19}:\d{1,19}")
#: A Redis stream id as ``since`` or ``Last-Event-ID``: ``0``, ``$``, ``MS`` or ``MS-SEQ``.
_EVENT_ID = re.compile(r"\$|\d{1,19}(?:-\d{1,19})?")


async def _sse(url: str, key: str, start: str) -> AsyncIterator[str]:
    """Server-sent events from a Redis stream: ``id``, ``event`` (start, estimate, end) and
    the JSON ``data`` of each; a comment every ~15 s of silence keeps idle connections open.
    Async, so a client that goes away cancels the read at once."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10)
    last, idle = start, 0
    try:
        while True:
            entries = await client.xread({key: last}, count=100, block=1000)
            if not entries:
                idle += 1
                if idle % 15 == 0:
                    yield ": keep-alive\n\n"
                continue
            idle = 0
            for entry_id, fields in entries[0][1]:
                last = entry_id.decode()
                item = {k.decode(): v.decode() for k, v in fields.items()}
                data = {"track": item["track"], "version": int(item["version"]), "event": item["event"]}
                yield f"id: {last}\nevent: {item['event']}\ndata: {json.dumps(data)}\n\n"
    finally:
        await client.aclose()
