"""Plain ``lipx serve`` against ``lipx serve --ray`` with 1 and 2 replicas: one ramp each, the
same package, video and criterion, on this machine (the README's overhead comparison).

    .venv/bin/python scripts/bench_serve_ray.py PKG VIDEO OUT [--seconds 20]
        [--ramp 4,8,12,16,20,24,28,32,40]

Starts a Ray head here (``ray start --head --num-cpus CORES``), runs:

(a) ``plain``: ``lipx serve PKG`` (its defaults: a front-end worker per core);
(b) ``ray-1``: ``lipx serve PKG --ray ADDR --replicas 1 --cpus-per-replica CORES`` (the same
    workers, in one replica);
(c) ``ray-2``: ``lipx serve PKG --ray ADDR --replicas 2 --cpus-per-replica CORES/2`` (the cores
    split between two replicas, each with its own model and batcher);

each under ``lipx bench-serve --ramp`` (a count holds with no frame dropped and an emission p95
of at most 1 s), then stops the cluster. Beside bench-serve's rows it samples every second the
resident memory of the serving processes (the server; or the replicas) and of Ray's own
(raylet, GCS, controller, proxy, the ``lipx serve --ray`` driver), from /proc. Writes
OUT/ray-compare.json and OUT/ray-compare.png, with each configuration's rows and server log.
Timings: run it on an otherwise quiet machine.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench_serve_compare import (
    free_port,
    log,
    plot_ramps,
    ramp_arguments,
    ramp_server,
)

RAY = Path(sys.executable).with_name("ray")
RAY_SYSTEM = ("raylet", "gcs_server", "ServeController", "ProxyActor", "dashboard",
              "log_monitor", "monitor.py", "runtime_env_agent")
"""Command-line marks of Ray's own processes."""


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _processes() -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
            except OSError:
                continue
            found.append((int(entry.name), cmd))
    return found


class MemorySampler:
    """Every second: the serving processes' RSS summed (``server_pid``'s, or the Ray
    replicas'), and Ray's own processes' RSS summed (with ``lipx serve --ray``'s, ``driver_pid``);
    the peaks and the values before the first stream."""

    def __init__(self, server_pid: int | None, driver_pid: int | None) -> None:
        self.server_pid, self.driver_pid = server_pid, driver_pid
        self.samples: list[tuple[float, float, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> tuple[float, float]:
        serving = ray_own = 0.0
        for pid, cmd in _processes():
            if pid == self.server_pid or "ServeReplica" in cmd:
                serving += _rss_mb(pid)
            elif pid == self.driver_pid or any(mark in cmd for mark in RAY_SYSTEM):
                ray_own += _rss_mb(pid)
        return serving, ray_own

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            self.samples.append((time.monotonic(), *self.sample()))

    def __enter__(self) -> MemorySampler:
        self.idle = self.sample()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def summary(self) -> dict[str, float]:
        serving = [s[1] for s in self.samples] or [0.0]
        ray_own = [s[2] for s in self.samples] or [0.0]
        return {"serving_rss_mb_idle": round(self.idle[0], 1),
                "serving_rss_mb_peak": round(max(serving), 1),
                "ray_rss_mb_idle": round(self.idle[1], 1),
                "ray_rss_mb_peak": round(max(ray_own), 1)}


def _watcher(extra: list[str]) -> Any:
    """The memory sampler of a configuration: the server itself, or the Ray replicas (and the
    ``lipx serve --ray`` driver counted with Ray's own processes)."""
    return lambda proc: MemorySampler(None if extra else proc.pid, proc.pid if extra else None)


def configs(cores: int, address: str) -> dict[str, list[str]]:
    half = max(cores / 2, 0.5)
    return {"plain": [],
            "ray-1": ["--ray", address, "--replicas", "1", "--cpus-per-replica", str(cores)],
            "ray-2": ["--ray", address, "--replicas", "2", "--cpus-per-replica", f"{half:g}"]}


def main() -> None:
    args = ramp_arguments(__doc__).parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ramp = [int(n) for n in args.ramp.split(",")]
    cores = os.cpu_count() or 1
    port = free_port()
    subprocess.run([str(RAY), "start", "--head", f"--port={port}", f"--num-cpus={cores}",
                    "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats"],
                   check=True, capture_output=True)
    started = time.perf_counter()
    try:
        reports = {name: ramp_server(name, extra, args.pkg, args.video, args.out, ramp,
                                     args.seconds, watch=_watcher(extra))
                   for name, extra in configs(cores, f"127.0.0.1:{port}").items()}
    finally:
        subprocess.run([str(RAY), "stop"], capture_output=True)
    import ray

    machine = {"cpus": cores, "platform": platform.platform(),
               "processor": platform.processor(), "python": platform.python_version(),
               "ray": ray.__version__}
    (args.out / "ray-compare.json").write_text(json.dumps(
        {"machine": machine, "package": str(args.pkg), **reports}, indent=1) + "\n")
    plot_ramps(reports, args.out / "ray-compare.png",
               f"lipx serve, plain and on Ray, {cores} cores")
    log("sustained: " + ", ".join(f"{k} {v['sustained']}" for k, v in reports.items())
        + f"; wrote {args.out}/ray-compare.json | {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
