"""A local Prometheus for ``mcsched up --prometheus``, using the shipped config and rules.

It belongs to the state dir's cluster: recorded in ``cluster.json`` and stopped by ``down``.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

from scheduler.errors import RuntimeUnavailable
from scheduler.paths import PACKAGE_DIR
from scheduler.runtime.cluster import ClusterInfo, free_port

DEPLOY = PACKAGE_DIR.parent / "deploy" / "prometheus"


def render_config(metrics_target: str, rules_path: Path, interval: str = "5s", ray_temp_dir: str | None = None) -> str:
    """The shipped prometheus.yml with this machine's scheduler target, rules and Ray temp dir."""
    text = (DEPLOY / "prometheus.yml").read_text()
    text = text.replace("mcsched-scheduler:9464", metrics_target)
    text = text.replace("/etc/prometheus/rules/mcsched-rules.yml", str(rules_path))
    if ray_temp_dir:
        text = text.replace("/tmp/ray/prom_metrics_service_discovery.json", f"{ray_temp_dir}/prom_metrics_service_discovery.json")
    return text.replace("scrape_interval: 15s", f"scrape_interval: {interval}").replace(
        "evaluation_interval: 15s", f"evaluation_interval: {interval}"
    )


def start_prometheus(
    workdir: Path, metrics_target: str, port: int | None = None, interval: str = "5s", ray_temp_dir: str | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeUnavailable("prometheus is not installed (Debian: apt-get install prometheus)")
    workdir.mkdir(parents=True, exist_ok=True)
    rules = workdir / "mcsched-rules.yml"
    shutil.copyfile(DEPLOY / "rules" / "mcsched-rules.yml", rules)
    config = workdir / "prometheus.yml"
    config.write_text(render_config(metrics_target, rules, interval, ray_temp_dir))
    port = port or free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "prometheus.log").open("wb"),
    )
    return proc, f"http://127.0.0.1:{port}"


def prometheus_running(info: ClusterInfo) -> bool:
    """Is the Prometheus recorded for this cluster still that process?"""
    import psutil

    if not info.prometheus_pid:
        return False
    try:
        return any(info.state_dir in arg for arg in psutil.Process(info.prometheus_pid).cmdline())
    except psutil.Error:
        return False


def start_local_prometheus(info: ClusterInfo, metrics_port: int | None = None) -> ClusterInfo:
    """Start a Prometheus scraping this cluster's scheduler and Ray, and record it in cluster.json."""
    port = metrics_port or info.metrics_port
    proc, url = start_prometheus(Path(info.state_dir) / "prometheus", f"127.0.0.1:{port}", ray_temp_dir=info.temp_dir)
    info = dataclasses.replace(info, prometheus_url=url, prometheus_pid=proc.pid, ports={**info.ports, "prometheus": int(url.rsplit(":", 1)[1])})
    info.save()
    return info


def ensure_prometheus(info: ClusterInfo) -> tuple[ClusterInfo, bool]:
    """The cluster's local Prometheus, started unless it already runs; returns (info, started)."""
    if prometheus_running(info):
        return info, False
    return start_local_prometheus(info), True
