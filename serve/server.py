"""``tracklens serve``: Redis (given or private), Ray (local or a cluster), the Serve app, and a
clean stop on Ctrl-C or SIGTERM.

Without ``--address`` it owns everything it starts: a Ray of this machine alone (never one it
happens to find running here), a private redis-server unless given one, and stops them all.
With ``--address`` it attaches to a running cluster that it does not own: the Redis must be
given (the cluster's nodes must reach it), the app is deployed under its name, and stopping
deletes that application only; the cluster, its Serve and its other applications go on. A
cluster that already runs the application (another ``serve --address``, a RayService) is
refused: a second one would take it over and, when stopped, delete it under the first."""

from __future__ import annotations

import socket
from collections.abc import Callable

from tracklens.pipeline.errors import ConfigError
from tracklens.pipeline.urls import excerpt, quoted

__all__ = ["APP_NAME", "run_server"]

#: The Serve application's name: what ``--address`` deletes when it stops, and nothing else.
APP_NAME = "tracklens"


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _check_ray_address(address: str, timeout_s: float = 5.0) -> None:
    """A cluster address must be ``auto`` or a head's ``HOST:PORT`` that accepts a connection
    now: Ray itself would wait for an unreachable head for minutes. A loopback host is also
    tried at this machine's address, as Ray does."""
    if address == "auto":
        return
    host, _, port_text = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536 or not address.isprintable() or len(address) > 300:
        raise ConfigError(f"invalid --address {quoted(address)}: expected HOST:PORT of the Ray head (its GCS port, 6379 by default) or auto")
    port = int(port_text)
    hosts = [host]
    if host in ("localhost", "::1") or host.startswith("127."):
        import ray.util

        hosts.append(ray.util.get_node_ip_address())
    why = ""
    for candidate in hosts:
        try:
            with socket.create_connection((candidate, port), timeout=timeout_s):
                return
        except OSError as err:
            why = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err))
    raise ConfigError(f"--address {quoted(address)}: cannot reach a Ray head there ({why}); is `ray start --head` running on it?")


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
    if address is not None and url is None:
        raise ConfigError(
            "--address attaches to a Ray cluster: give the Redis its nodes share with --redis-url or TRACKLENS_REDIS_URL "
            "(a private redis-server would be out of their reach)"
        )
    if address is not None:
        _check_ray_address(address)
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
        # on a cluster the API is served by the head node's proxy, which Serve may run already
        if address is None and not _port_free(config.api.host, config.api.port):
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
    import ray.exceptions
    import ray.serve
    from ray.serve.config import HTTPOptions
    from ray.serve.schema import LoggingConfig

    from .app import build_app, local_resources
    from .deployments import estimators_label

    say(f"tracklens: {f'attaching to the Ray cluster at {address}' if address else 'starting Ray on this machine'}")
    if address:
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, ray.exceptions.RayError) as err:  # an unreachable head, a missing auth token
            why = excerpt(str(err).split(". ")[0], 160)
            # Ray 2.60 says only "failed to connect" when its head refused a driver without the token
            hint = "is its head running, and does this process have its token (RAY_AUTH_MODE=token, ~/.ray/auth_token)?"
            raise ConfigError(f"cannot attach to the Ray cluster at {quoted(address)}: {why}; {hint}") from None
    else:
        # A Ray of our own ("local": never a cluster `ray start` left on this machine) is this
        # machine's alone: its node address is loopback, and it offers the node roles the
        # replicas ask for. (Ray 2.60's gRPC servers still listen on every interface; they
        # require Ray's auth token, made private below.)
        ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
                 _node_ip_address="127.0.0.1", resources=local_resources(config))  # fmt: skip
        _private_ray_token()
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # its start-up INFO lines would bury ours
    try:
        # stop signals count from here: one that comes while the app deploys still deletes it
        with stop_signals() as signals:
            quiet = LoggingConfig(log_level="WARNING", enable_access_log=False)
            # by default one proxy, on the head node: on a cluster the API is the head's (nodes of
            # one machine would all bind the same port); a Serve already running keeps its options
            ray.serve.start(proxy_location=config.api.proxy_location,
                            http_options=HTTPOptions(host=config.api.host, port=config.api.port), logging_config=quiet)  # fmt: skip
            if address and APP_NAME in ray.serve.status().applications:
                raise ConfigError(
                    f"the Ray cluster at {quoted(address)} already runs a {APP_NAME} application (another `tracklens serve "
                    "--address`, or a RayService); stop that one first (one left by a killed serve goes with Ray's "
                    "`serve shutdown` on the head, which deletes every Serve application there)"
                )
            target = ray.serve.RunTarget(build_app(config), name=APP_NAME, route_prefix="/", logging_config=quiet)
            ray.serve.run_many([target], wait_for_applications_running=False)
            if _deployed(config, address, say, signals.event):
                where = "the head node's " if address and config.api.proxy_location == "HeadOnly" else ""
                say(
                    f"tracklens: serving on {where}http://{config.api.host}:{config.api.port} (Redis {shown_url}; estimators: "
                    f"{estimators_label(config)}); the console: http://{config.api.host}:{config.api.port}/ in a browser; "
                    "Ctrl-C or SIGTERM stops it"
                )
                signals.event.wait()
            if address:
                say(f"tracklens: {signals.name}: deleting the {APP_NAME} application (streams hand over their state); "
                    "the cluster goes on")  # fmt: skip
                ray.serve.delete(APP_NAME)
            else:
                say(f"tracklens: {signals.name}: stopping (streams hand over their state, then Ray stops)")
                ray.serve.shutdown()
        return 0
    finally:
        ray.shutdown()  # on a cluster: this driver disconnects, the cluster stays


def _deployed(config, address: str | None, say, stop, wait_notice_s: float = 60.0) -> bool:
    """Wait until the application runs (True) or a stop signal came first (False); says once
    what it waits for when that takes long (a cluster whose nodes lack a role the replicas ask
    for never places them). A failed deployment is a :class:`ConfigError`."""
    import time

    import ray.serve

    started = time.monotonic()
    noticed = False
    while not stop.wait(1.0):
        app = ray.serve.status().applications.get(APP_NAME)
        state = getattr(app, "status", None)
        if state == "RUNNING":
            return True
        if state == "DEPLOY_FAILED":
            raise ConfigError(f"the {APP_NAME} application failed to deploy: {excerpt(app.message or 'no reason given', 200)}")
        if not noticed and time.monotonic() - started > wait_notice_s:
            from .app import deployment_options

            roles = sorted({r for o in deployment_options(config).values() for r in o["ray_actor_options"].get("resources", {})})
            where = f"nodes offering the roles {', '.join(roles)} (ray start --resources)" if address else "room on this machine"
            say(f"tracklens: still deploying after {wait_notice_s:.0f} s; its replicas wait for {where}")
            noticed = True
    return False


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
