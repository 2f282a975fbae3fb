"""The ``tracklens`` command: the pipeline's commands plus ``tracklens serve``.

    tracklens serve [--config FILE] [--address RAY_ADDRESS] [--redis-url URL] [--port N]
"""

from __future__ import annotations

import argparse
import sys

from tracklens.pipeline.cli import Extension
from tracklens.pipeline.cli import main as pipeline_main

__all__ = ["main"]


class ServeCommand(Extension):
    name = "serve"

    def add_to(self, subparsers) -> None:
        serve = subparsers.add_parser("serve", help="run the live service (Ray Serve: HTTP API, ingest, estimator pools)")
        serve.add_argument("--config", help="YAML service config (defaults are embedded; see configs/serve.yaml)")
        serve.add_argument("--address", help="Ray cluster address (default: start Ray on this machine)")
        serve.add_argument("--redis-url", help="Redis of the service (default: $TRACKLENS_REDIS_URL, else a private redis-server)")
        serve.add_argument("--port", type=int, help="HTTP port (default: the config's, 8000)")

    def run(self, args: argparse.Namespace, say) -> int:
        from .server import run_server

        return run_server(args.config, args.address, args.redis_url, args.port, say)


def main(argv: list[str] | None = None) -> int:
    return pipeline_main(argv, extensions=(ServeCommand(),))


if __name__ == "__main__":
    sys.exit(main())
