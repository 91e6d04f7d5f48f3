"""Renders docs/dashboard.png: the chart's Grafana dashboard, panel by panel, from a real run.

    python3 scripts/render_dashboard.py [--out docs/dashboard.png]

The run is the first steps of the end-to-end scenario (docs/e2e.md) on the local real control plane: the
chart installed, a WorkerPool and two ModelDeployments, one of which the forecast prewarms ahead of its
ramp, OpenAI requests and the ramp. A real Prometheus (Debian's ``prometheus``) scrapes every Pod of the
namespace meanwhile, each labelled with its ``pod`` as the chart's PodMonitor does. Then each panel of
``charts/warmserve/dashboards/warmserve.json`` is evaluated as Grafana would, its PromQL over the run
(``query_range``), and drawn with matplotlib in the dashboard's order: the panels are the dashboard's own,
only the drawing is not Grafana's. Needs the test control plane (``make cluster``) and ``prometheus``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from e2e.harness.cluster import free_port, running_cluster  # noqa: E402
from e2e.harness.processes import stop_all  # noqa: E402
from e2e.scenario import Scenario  # noqa: E402
from e2e.test_scenario import LocalTarget  # noqa: E402

DASHBOARD = REPO / "charts" / "warmserve" / "dashboards" / "warmserve.json"
STEP_S = 2.0


def follow_pods(target: LocalTarget, targets_file: Path, stop: threading.Event) -> None:
    """Keep Prometheus's file of scrape targets equal to the namespace's running Pods and their ports."""
    import kubernetes

    core = kubernetes.client.CoreV1Api(target.api)
    while not stop.wait(1.0):
        groups = []
        for pod in core.list_namespaced_pod(target.namespace).items:
            if pod.status.phase != "Running" or not pod.status.pod_ip:
                continue
            for port in pod.spec.containers[0].ports or []:
                if port.name in ("http", "health"):
                    address = f"{pod.status.pod_ip}:{port.container_port}"
                    groups.append({"targets": [address], "labels": {"pod": pod.metadata.name}})
        targets_file.write_text(json.dumps(groups))


def query_range(url: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": STEP_S})
    with urllib.request.urlopen(f"{url}/api/v1/query_range?{params}", timeout=30) as answer:
        result: list[dict[str, Any]] = json.load(answer)["data"]["result"]
    return result


def legend(target: dict[str, Any], labels: dict[str, str]) -> str:
    """A series' name as Grafana writes it: the target's ``legendFormat`` with each ``{{label}}`` filled in
    (without one, the labels)."""
    text = target.get("legendFormat") or ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), text)


def draw(url: str, start: float, end: float, out: Path) -> None:
    """Every panel of the dashboard, in its order, two to a row."""
    panels = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p.get("targets")]
    rows = (len(panels) + 1) // 2
    figure, axes = plt.subplots(rows, 2, figsize=(14, 3.2 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        for target in panel["targets"]:
            for series in query_range(url, target["expr"], start, end):
                times = [(float(t) - start) / 60 for t, _ in series["values"]]
                values = [float(v) for _, v in series["values"]]
                ax.plot(times, values, label=legend(target, series["metric"]))
        ax.set_title(panel["title"], fontsize=10)
        ax.set_xlabel("minutes into the run", fontsize=8)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=6, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no data in this run", ha="center", va="center", transform=ax.transAxes)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    figure.suptitle("WarmServe dashboard (charts/warmserve/dashboards/warmserve.json) over a real run")
    figure.tight_layout()
    figure.savefig(out, dpi=90)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "dashboard.png", help="the PNG to write")
    args = parser.parse_args()
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        parser.error("prometheus is not installed (make install installs Debian's)")
    from e2e.harness.binaries import cluster_binaries

    helm = cluster_binaries().helm / "helm"
    with tempfile.TemporaryDirectory() as scratch, running_cluster(nodes=2, gpus_per_node=4) as cluster:
        work = Path(scratch)
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        cluster.kubectl("create", "namespace", "demo")
        time.sleep(6)  # the namespace's default ServiceAccount
        target = LocalTarget(cluster, "demo", helm, work)
        targets = work / "targets.json"
        targets.write_text("[]")
        config = {
            "global": {"scrape_interval": f"{STEP_S:g}s"},
            "scrape_configs": [{"job_name": "warmserve", "file_sd_configs": [{"files": [str(targets)]}]}],
        }
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        server = subprocess.Popen(
            [
                prometheus,
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stop = threading.Event()
        follower = threading.Thread(target=follow_pods, args=(target, targets, stop), daemon=True)
        follower.start()
        try:
            start = time.time()
            scenario = Scenario(target)
            scenario.install()
            scenario.prewarm_ahead_of_the_ramp()
            scenario.serve_openai()
            scenario.ramp()
            time.sleep(10)
            draw(f"http://127.0.0.1:{port}", start, time.time(), args.out)
        finally:
            stop.set()
            stop_all([server], grace=3.0)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
