"""One package, many camera-paced streams, three ways, on this machine (the README's comparison).

    .venv/bin/python scripts/bench_serve_compare.py PKG VIDEO OUT [--seconds 20]
        [--ramp 4,8,12,16,20,24,28,32,40] [--separate 4,8,16]

(a) ``batched``: ``lipx serve PKG`` (its defaults: batching across streams) under
    ``lipx bench-serve --ramp``;
(b) ``unbatched``: ``lipx serve PKG --max-batch 1`` under the same ramp;
(c) ``separate``: N ``lipx stream VIDEO --model PKG --realtime`` processes side by side, for each
    N of ``--separate``.

Both servers run with ``--max-streams`` above the ramp's top, so a ramp ends at what the machine
holds, not at the server's cap. A count *holds* when no frame is dropped and the emission
latency's p95 is at most 1 s (:func:`lipx.serve.bench_results.failure`, for all three). Emission
latency: for (a) and (b) measured by the client (a word's receipt after its end frame was due;
the server's own ``emitted_s - end_s`` is in the JSON too); for (c) each process' own
``emitted_s - end_s`` of every word (``--jsonl``), pooled. A process' memory is its peak RSS
(``wait4``'s ``ru_maxrss``); a server's is its RSS after each count (``/metrics``).

Writes OUT/batched.json, OUT/unbatched.json, OUT/separate.json (the rows), OUT/compare.json (all
three and the machine) and OUT/compare.png (streams vs dropped %, emission p95 and memory), with
the servers' logs and each process' statistics beside them. Every number is a timing: run it on
an otherwise quiet machine. (c) cannot loop the video: a process streams ``--seconds`` of it or
the whole video if shorter (its rows say how many frames).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lipx.package import Package
from lipx.serve.bench import DEFAULT_RAMP, BenchServeOptions, bench_serve
from lipx.serve.bench_results import ServeRun, failure, p50_p95

LIPX = [sys.executable, "-c", "from lipx.cli import main; main()"]
START_TIMEOUT_S = 300.0
"""Most seconds a server may take to load its package."""
SERVERS = {"batched": [], "unbatched": ["--max-batch", "1"]}
"""The two server configurations: their extra ``lipx serve`` options."""


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(pkg: Path, extra: list[str], max_streams: int, log_path: Path
                 ) -> tuple[subprocess.Popen[bytes], str]:
    """``lipx serve PKG`` on a free port, once ``/healthz`` answers; (process, http URL)."""
    port = free_port()
    args = [*LIPX, "serve", str(pkg), "--port", str(port), "--max-streams", str(max_streams),
            *extra]
    with log_path.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    sys.exit(f"lipx serve did not start; its log: {log_path}\n{log_path.read_text()[-2000:]}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def ramp_server(name: str, extra: list[str], pkg: Path, video: Path, out: Path,
                ramp: list[int], seconds: float,
                watch: Callable[[subprocess.Popen[bytes]], Any] | None = None
                ) -> dict[str, Any]:
    """``lipx serve PKG EXTRA`` under bench-serve's ramp; its report (also OUT/NAME.json).
    ``watch(process)``, a context manager with ``summary()``, runs beside the ramp and adds
    its summary as ``memory``."""
    log(f"== {name}: lipx serve PKG {' '.join(extra) or '(defaults)'}, ramp {ramp}")
    proc, url = start_server(pkg, extra, max(ramp) + 8, out / f"serve-{name}.log")
    try:
        with watch(proc) if watch else contextlib.nullcontext() as watcher:
            opts = BenchServeOptions(url, video, streams=ramp, seconds=seconds, ramp=True,
                                     json_path=out / f"{name}.json")
            report = bench_serve(opts, progress=log)
    finally:
        stop_server(proc)
    report["server_args"] = ["serve", "PKG", "--max-streams", str(max(ramp) + 8), *extra]
    if watcher is not None:
        report["memory"] = watcher.summary()
    (out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    log(f"{name}: sustained {report['sustained']} streams")
    return report


def serve_config(name: str, pkg: Path, video: Path, out: Path, ramp: list[int],
                 seconds: float) -> dict[str, Any]:
    """(a) or (b): a server with ``SERVERS[name]``'s options under bench-serve's ramp."""
    return ramp_server(name, SERVERS[name], pkg, video, out, ramp, seconds)


def run_processes(pkg: Path, video: Path, n: int, frames: int, folder: Path
                  ) -> list[dict[str, Any]]:
    """N ``lipx stream --realtime`` processes at once; each one's stats, words, RSS and CPU."""
    folder.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(n):
        args = [*LIPX, "stream", str(video), "--model", str(pkg), "--realtime",
                "--max-frames", str(frames), "--stats", str(folder / f"{i}.stats.json"),
                "--jsonl", str(folder / f"{i}.jsonl")]
        with (folder / f"{i}.log").open("wb") as out:
            procs.append(subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT))
    results = []
    for i, proc in enumerate(procs):
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # wait4 reaped it
        stats = folder / f"{i}.stats.json"
        results.append({"rc": proc.returncode, "rss_mb": usage.ru_maxrss / 1e3,
                        "cpu_s": usage.ru_utime + usage.ru_stime,
                        "stats": json.loads(stats.read_text()) if stats.is_file() else None,
                        "waits": _waits(folder / f"{i}.jsonl")})
    return results


def _waits(jsonl: Path) -> list[float]:
    """Each word's ``emitted_s - end_s`` in a stream's ``--jsonl``."""
    if not jsonl.is_file():
        return []
    words = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    return [w["emitted_s"] - w["end_s"] for w in words
            if w.get("type") == "word" and w.get("emitted_s") is not None]


def separate_row(n: int, results: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    """(c)'s row for N processes, judged by the servers' criteria."""
    stats = [r["stats"] for r in results if r["stats"] is not None]
    out = sum(s["frames_out"] for s in stats)
    dropped = sum(s["frames_dropped"] for s in stats)
    p50, p95 = p50_p95([w for r in results for w in r["waits"]])
    worst = [s["emission"]["p95_ms"] / 1e3 for s in stats if (s.get("emission") or {}).get("count")]
    broken = sum(r["rc"] != 0 or r["stats"] is None for r in results)
    run = ServeRun(streams=n, frames=out + dropped, dropped=dropped, emission_p95_s=p95,
                   errors={"process failed": broken} if broken else {})
    rss = [r["rss_mb"] for r in results]
    cpu = sum(r["cpu_s"] for r in results)
    return {"streams": n, "frames": out + dropped, "dropped": dropped,
            "dropped_pct": round(100 * dropped / max(out + dropped, 1), 2),
            "emission_p50_s": p50, "emission_p95_s": p95,
            "emission_p95_s_worst_process": round(max(worst), 3) if worst else None,
            "words": sum(len(r["waits"]) for r in results),
            "rss_mb_per_process": round(sum(rss) / len(rss), 1), "rss_mb_max": round(max(rss), 1),
            "rss_mb_total": round(sum(rss), 1), "cpu_s": round(cpu, 2),
            "cpu_util": round(cpu / wall_s, 2), "wall_s": round(wall_s, 2),
            "failed_processes": broken, "failed": failure(run)}


def separate_config(pkg: Path, video: Path, out: Path, counts: list[int],
                    seconds: float) -> dict[str, Any]:
    """(c): N separate ``lipx stream`` processes for each N."""
    fps = Package.open(pkg).manifest.video.fps
    frames = round(seconds * fps)
    log(f"== separate: N x lipx stream --realtime --max-frames {frames}, N in {counts}")
    rows = []
    for n in counts:
        started = time.perf_counter()
        results = run_processes(pkg, video, n, frames, out / "separate" / str(n))
        rows.append(separate_row(n, results, time.perf_counter() - started))
        row = rows[-1]
        log(f"{n} processes: {row['frames']} frames, dropped {row['dropped']} "
            f"({row['dropped_pct']}%), emission p95 {row['emission_p95_s']} s, "
            f"rss {row['rss_mb_per_process']} MB each, cpu {row['cpu_util']}x | "
            f"{'FAILED: ' + row['failed'] if row['failed'] else 'ok'}")
    report = {"video": str(video), "seconds": seconds, "fps": fps, "max_frames": frames,
              "command": "lipx stream VIDEO --model PKG --realtime --max-frames F", "runs": rows}
    (out / "separate.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def plot_ramps(reports: dict[str, dict[str, Any]], path: Path, title: str,
               memory: dict[str, str] | None = None, memory_title: str = "") -> None:
    """Streams vs dropped %, emission p95 (and, with ``memory``, each configuration's memory
    field), one line per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if memory else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4.2))
    for name, report in reports.items():
        runs = report["runs"]
        n = [r["streams"] for r in runs]
        axes[0].plot(n, [r["dropped_pct"] for r in runs], "o-", label=name)
        axes[1].plot(n, [r["emission_p95_s"] for r in runs], "o-", label=name)
        if memory:
            axes[2].plot(n, [r[memory[name]] for r in runs], "o-", label=name)
    axes[1].axhline(1.0, color="grey", linestyle=":", linewidth=1)
    titles = ["frames dropped (%)", "emission latency p95 (s)", memory_title]
    for ax, name in zip(axes, titles):
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("streams")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot(reports: dict[str, dict[str, Any]], path: Path) -> None:
    """The three ways: drops, emission p95 and memory against streams."""
    fps = next(iter(reports.values()))["fps"]
    plot_ramps(reports, path,
               f"one package, camera-paced streams at {fps:g} fps, {os.cpu_count()} cores "
               f"({platform.processor() or platform.machine()})",
               memory={"batched": "server_rss_mb", "unbatched": "server_rss_mb",
                       "separate": "rss_mb_total"},
               memory_title="memory (MB): server RSS, or the processes' peak RSS summed")


def ramp_arguments(doc: str) -> argparse.ArgumentParser:
    """PKG VIDEO OUT [--seconds] [--ramp]: what every serving comparison takes."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("pkg", type=Path)
    parser.add_argument("video", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--ramp", default=",".join(map(str, DEFAULT_RAMP)))
    return parser


def main() -> None:
    parser = ramp_arguments(__doc__)
    parser.add_argument("--separate", default="4,8,16")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ramp = [int(n) for n in args.ramp.split(",")]
    started = time.perf_counter()
    reports = {name: serve_config(name, args.pkg, args.video, args.out, ramp, args.seconds)
               for name in SERVERS}
    reports["separate"] = separate_config(args.pkg, args.video, args.out,
                                          [int(n) for n in args.separate.split(",")],
                                          args.seconds)
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(),
               "processor": platform.processor(), "python": platform.python_version()}
    (args.out / "compare.json").write_text(json.dumps(
        {"machine": machine, "package": str(args.pkg), **reports}, indent=1) + "\n")
    plot(reports, args.out / "compare.png")
    log(f"sustained: batched {reports['batched']['sustained']}, unbatched "
        f"{reports['unbatched']['sustained']} streams; wrote {args.out}/compare.json, "
        f"compare.png | {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
