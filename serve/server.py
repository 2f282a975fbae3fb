"""``tracklens serve``: Redis (given or private), Ray (local or a cluster), the Serve app, and a
clean stop on Ctrl-C or SIGTERM."""

from __future__ import annotations

import socket
from collections.abc import Callable

from tracklens.pipeline.errors import ConfigError

__all__ = ["run_server"]


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def run_server(config_path: str | None, address: str | None, redis_url: str | None, port: int | None, say: Callable[[str], None]) -> int:
    """Start everything, serve until a stop signal, stop everything; returns the exit status.
    One service per ``TRACKLENS_HOME``: its lock is held for the life of the process."""
    from tracklens.pipeline.config import load_serve_config
    from tracklens.pipeline.env import redis_url as env_redis_url
    from tracklens.pipeline.env import tracklens_home
    from tracklens.pipeline.locks import LockHeldError, ProcessLock
    from tracklens.pipeline.models import ModelCache
    from tracklens.pipeline.service.control import ControlPlane
    from tracklens.pipeline.service.redis_server import PrivateRedis
    from tracklens.pipeline.shutdown import StopSignals
    from tracklens.pipeline.urls import redact_url

    overrides: dict = {}
    flags: dict[str, str] = {}
    url, flag = (redis_url, "--redis-url") if redis_url is not None else (env_redis_url(), "TRACKLENS_REDIS_URL")
    if url is not None:
        overrides["store.url"], flags["store.url"] = url, flag
    if port is not None:
        overrides["api.port"], flags["api.port"] = port, "--port"
    config = load_serve_config(config_path, overrides, flags)
    home = tracklens_home()
    try:
        home.mkdir(parents=True, exist_ok=True)
        lock = ProcessLock(home / "serve.lock", f"TRACKLENS_HOME {home}").acquire()
    except LockHeldError as err:
        raise ConfigError(f"{err} (another tracklens serve); stop it, or give this one another TRACKLENS_HOME") from None
    except OSError as err:
        raise ConfigError(f"cannot lock TRACKLENS_HOME {home}: {err.strerror}") from None
    private = None
    try:
        if not _port_free(config.api.host, config.api.port):
            raise ConfigError(f"port {config.api.port} on {config.api.host} is in use; choose another with --port")
        say("tracklens: checking the models")
        ModelCache(progress=say).pull()
        if url is None:
            private = PrivateRedis(home / "redis").start()
            store = config.store.model_copy(update={"url": private.url, "password_file": private.password_file})
            config = config.model_copy(update={"store": store})
            say(f"tracklens: started a private redis-server at {private.url} (data and password in {private.folder}, 0700)")
        control = ControlPlane.from_config(config.store)
        control.ping()  # an unreachable Redis is an error before Ray starts
        control.close()
        return _serve(config, address, say, redact_url(config.store.url), StopSignals)
    finally:
        if private is not None:
            private.stop()
        lock.release()


def _serve(config, address: str | None, say, shown_url: str, stop_signals) -> int:
    import logging

    import ray
    import ray.serve
    from ray.serve.config import HTTPOptions
    from ray.serve.schema import LoggingConfig

    from .app import build_app
    from .deployments import estimators_label

    say(f"tracklens: starting Ray{f' at {address}' if address else ' on this machine'}")
    # A Ray of our own is this machine's alone: its node address is loopback. (Ray 2.60's gRPC
    # servers still listen on every interface; they require Ray's auth token, made private below.)
    local = {} if address else {"_node_ip_address": "127.0.0.1"}
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False, **local)
    if not address:
        _private_ray_token()
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # its start-up INFO lines would bury ours
    try:
        quiet = LoggingConfig(log_level="WARNING", enable_access_log=False)
        ray.serve.start(http_options=HTTPOptions(host=config.api.host, port=config.api.port), logging_config=quiet)
        ray.serve.run(build_app(config), name="tracklens", route_prefix="/", blocking=False, logging_config=quiet)
        say(
            f"tracklens: serving on http://{config.api.host}:{config.api.port} (Redis {shown_url}; estimators: "
            f"{estimators_label(config)}); the console: http://{config.api.host}:{config.api.port}/ in a browser; Ctrl-C or SIGTERM stops it"
        )
        with stop_signals() as signals:
            signals.event.wait()
            say(f"tracklens: {signals.name}: stopping (streams hand over their state, then Ray stops)")
            ray.serve.shutdown()
        return 0
    finally:
        ray.shutdown()


def _private_ray_token() -> None:
    """Ray writes its cluster auth token world-readable (``~/.ray/auth_token``, 0644): anyone on
    the machine could read it and drive the local Ray. Only its owner may read it."""
    import os
    from pathlib import Path

    token = Path.home() / ".ray" / "auth_token"
    try:
        if token.stat().st_uid == os.getuid():
            token.chmod(0o600)
    except OSError:
        pass
