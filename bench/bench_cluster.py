"""How fast the test control plane comes up from cached binaries (the floor: 20 s) and goes down.

Prints the no-op build check (``e2e/cluster/build.sh`` with everything cached), the time from
``start_cluster()`` until ``/readyz`` answers and the Nodes are registered, until a Pod's process runs, and
the time ``stop()`` takes. Usage, from the repo root (which holds ``e2e``):
``python -m bench.bench_cluster [--runs N]``.
"""

from __future__ import annotations

import argparse
import time

import kubernetes

from e2e.harness.binaries import cluster_binaries
from e2e.harness.cluster import start_cluster

POD = {
    "metadata": {"name": "sleeper"},
    "spec": {
        "containers": [
            {
                "name": "main",
                "image": "warmserve/worker:bench",
                "command": ["python", "-c", "import time; time.sleep(60)"],
            }
        ]
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    began = time.monotonic()
    cluster_binaries()
    print(f"build.sh (cached): {time.monotonic() - began:.2f} s")
    for run in range(runs):
        began = time.monotonic()
        cluster = start_cluster()
        up = time.monotonic() - began
        try:
            with cluster.api_client() as client:
                core = kubernetes.client.CoreV1Api(client)
                while not core.list_namespaced_service_account("default").items:
                    time.sleep(0.05)
                core.create_namespaced_pod("default", POD)
            while not (cluster.agent and cluster.agent.pod_ip("default", "sleeper")):
                time.sleep(0.05)
            first_pod = time.monotonic() - began
        finally:
            stopping = time.monotonic()
            cluster.stop()
        down = time.monotonic() - stopping
        print(f"run {run}: up (readyz, Nodes) {up:.1f} s; first Pod {first_pod:.1f} s; stop {down:.1f} s")


if __name__ == "__main__":
    main()
