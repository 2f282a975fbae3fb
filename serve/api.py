"""The HTTP API: FastAPI routes over the control plane and the track store.

Built by :func:`make_api` (tested with FastAPI's TestClient, no Ray), served by the ``Api``
deployment on Ray Serve's proxy. It answers from Redis only: desired streams and jobs, their
statuses, tracks, events; it never calls the replica that owns a stream. Every error is JSON
``{"error": "..."}``: validation 422, unknown id 404, a name already taken 409, overload or an
unreachable store 503 with ``Retry-After``, a missing or wrong API key 401.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator, Callable
from typing import Literal

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from tracklens.pipeline.config import ServeConfig, check_stream_id
from tracklens.pipeline.errors import InputError, StoreError
from tracklens.pipeline.service.admission import admit_job_path, admit_stream_url
from tracklens.pipeline.service.control import ControlPlane, StreamOptions, StreamSpec, StreamStatus, new_id
from tracklens.pipeline.store import TrackStore
from tracklens.pipeline.summary import TrackSummary

from .metrics import render_metrics

__all__ = ["make_api"]


class StreamRequest(BaseModel):
    """``POST /v1/streams``: a live stream to watch."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="rtsp://, rtsps://, rtmp://, http(s):// (credentials allowed: never shown back)")
    name: str | None = Field(None, description="the stream id (1-64 of A-Z a-z 0-9 . _ -); default: generated")
    options: StreamOptions = StreamOptions()


class JobRequest(BaseModel):
    """``POST /v1/jobs``: a video file to analyse once."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="absolute path inside one of the service's file roots")
    name: str | None = None
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
    retry = config.api.retry_after_s
    capacity = config.ingest.replicas * config.ingest.max_streams

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(422, f"{where}: {first.get('msg', 'invalid')}" if where else first.get("msg", "invalid request"))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, err: HTTPException) -> JSONResponse:
        response = _error(err.status_code, str(err.detail))
        for name, value in (err.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(StoreError)
    async def _store(request: Request, err: StoreError) -> JSONResponse:
        return _error(503, f"the store is unavailable: {err}", retry)

    def require_key(authorization: str | None = Header(None)) -> None:
        if api_key is None:
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise HTTPException(401, "missing or wrong API key: send Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"})

    guarded = [Depends(require_key)]

    def _stream(stream_id: str, kind: str = "stream") -> StreamSpec:
        spec = control.spec(stream_id)
        if spec is None or spec.kind != kind:
            raise HTTPException(404, f"no {kind} {stream_id!r}")
        return spec

    def _view(spec: StreamSpec) -> dict:
        status = control.status(spec.id) or StreamStatus(id=spec.id, kind=spec.kind)
        return {**spec.public(), "status": status.model_dump()}

    def _check_name(name: str | None) -> None:
        if name is not None:
            try:
                check_stream_id(name)
            except ValueError as err:
                raise HTTPException(422, f"name: {err}") from None

    def _admit(kind: str, name: str | None, url: str, options: StreamOptions) -> StreamSpec:
        if len(control.specs()) >= capacity:
            raise HTTPException(503, f"no ingest capacity left ({capacity} streams and jobs run at once)", {"Retry-After": str(retry)})
        spec = StreamSpec(id=name or new_id(kind), kind=kind, url=url, name=name, options=options)
        if not control.add(spec):
            raise HTTPException(409, f"a stream or job named {spec.id!r} exists")
        return spec

    @app.post("/v1/streams", status_code=201, dependencies=guarded)
    def add_stream(body: StreamRequest) -> dict:
        _check_name(body.name)
        try:
            url = admit_stream_url(body.url, config.api, check=config.api.check_reachable and body.options.check)
        except InputError as err:
            raise HTTPException(422, str(err)) from None
        return _view(_admit("stream", body.name, url, body.options))

    @app.get("/v1/streams", dependencies=guarded)
    def list_streams() -> list[dict]:
        return [_view(spec) for spec in sorted(control.specs().values(), key=lambda s: s.created_at) if spec.kind == "stream"]

    @app.get("/v1/streams/{stream_id}", dependencies=guarded)
    def get_stream(stream_id: str) -> dict:
        return _view(_stream(stream_id))

    @app.delete("/v1/streams/{stream_id}", status_code=204, dependencies=guarded)
    def delete_stream(stream_id: str) -> Response:
        _stream(stream_id)
        control.remove(stream_id)
        return Response(status_code=204)

    @app.get("/v1/streams/{stream_id}/tracks", dependencies=guarded)
    def stream_tracks(
        stream_id: str,
        state: Literal["active", "ended"] | None = Query(None),
        since: float | None = Query(None, description="only tracks seen at or after this time (seconds)"),
    ) -> list[TrackSummary]:
        tracks = store.tracks(stream_id)
        if not tracks and control.spec(stream_id) is None:
            raise HTTPException(404, f"no stream {stream_id!r}")
        return [t for t in tracks if (state is None or t.state == state) and (since is None or t.last_seen >= since)]

    @app.get("/v1/tracks/{key}", dependencies=guarded)
    def get_track(key: str) -> TrackSummary:
        summary = store.get(key)
        if summary is None:
            raise HTTPException(404, f"no track {key!r} (unknown, or expired after its retention)")
        return summary

    @app.get("/v1/tracks/{key}/face.jpg", dependencies=guarded)
    def get_face(key: str) -> Response:
        if not config.ingest.store_face_crops:
            raise HTTPException(404, "face crops are not stored (ingest.store_face_crops is off)")
        data = control.face(key)
        if data is None:
            raise HTTPException(404, f"no face crop for track {key!r}")
        return Response(data, media_type="image/jpeg")

    @app.get("/v1/streams/{stream_id}/events", dependencies=guarded)
    def stream_events(
        stream_id: str,
        since: str | None = Query(None, description="replay from this event id (0: from the start)"),
        last_event_id: str | None = Header(None),
    ) -> StreamingResponse:
        if control.spec(stream_id) is None and not store.tracks(stream_id):
            raise HTTPException(404, f"no stream {stream_id!r}")
        key = f"{config.store.prefix}:stream:{stream_id}:events"
        return StreamingResponse(_sse(config.store.url, key, last_event_id or since or "$"), media_type="text/event-stream")

    @app.post("/v1/jobs", status_code=201, dependencies=guarded)
    def add_job(body: JobRequest) -> dict:
        _check_name(body.name)
        try:
            path = admit_job_path(body.path, config.api)
        except InputError as err:
            raise HTTPException(422, str(err)) from None
        return _job_view(_admit("job", body.name, str(path), body.options))

    def _job_view(spec: StreamSpec) -> dict:
        status = control.status(spec.id) or StreamStatus(id=spec.id, kind="job")
        result = control.result(spec.id)
        return {"id": spec.id, "path": spec.url, "created_at": spec.created_at, "state": status.state,
                "progress": status.progress, "frames_expected": status.frames_expected,
                "frames_analysed": status.frames_analysed, "status": status.model_dump(),
                "result": None if result is None else result.model_dump()}  # fmt: skip

    @app.get("/v1/jobs/{job_id}", dependencies=guarded)
    def get_job(job_id: str) -> dict:
        spec = control.job(job_id)
        if spec is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return _job_view(spec)

    @app.get("/metrics", dependencies=guarded)
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
