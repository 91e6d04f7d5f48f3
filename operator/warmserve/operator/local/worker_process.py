"""A fake-GPU worker process for the local runner: ``python -m warmserve.operator.local.worker_process``.

Runs one universal worker (:func:`warmserve.worker.server.create_app`) on the ``fake`` engine with the
given GPU profile, weight tier and speed, until SIGTERM or SIGINT. It exists until the ``warmserve
worker`` subcommand lands; the local runner then starts that instead. Bad options exit with code 2 and
one line naming the option.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from aiohttp import web

from warmserve.worker.engines.fake import FakeEngine
from warmserve.worker.errors import WarmServeError
from warmserve.worker.runtime import WorkerConfig, WorkerRuntime
from warmserve.worker.server import create_app
from warmserve.worker.timing import Tier, gpu_profile


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="warmserve-local-worker", description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--gpus", type=int, default=2)
    p.add_argument("--gpu-memory", type=int, required=True, help="pool bytes per GPU")
    p.add_argument("--profile", default="h100", help="GPU timing profile of the fake engine")
    p.add_argument("--tier", default=Tier.DISK.value, choices=[t.value for t in Tier])
    p.add_argument("--speed", type=float, default=1.0, help="fake engine delay multiplier (0 = none)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    endpoint = f"http://{args.host}:{args.port}"
    try:
        engine = FakeEngine(gpu_profile(args.profile, "--profile"), args.speed, Tier(args.tier))
        runtime = WorkerRuntime(
            WorkerConfig(args.name, args.gpus, args.gpu_memory, endpoint=endpoint), engine
        )
    except WarmServeError as exc:
        print(f"warmserve-local-worker: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    web.run_app(
        create_app(runtime),
        host=args.host,
        port=args.port,
        handler_cancellation=True,
        access_log=None,
        print=None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
