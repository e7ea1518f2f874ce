"""`python -m bench`: chatd's daemon benchmarks (issue #2), interleaved rounds, written to docs/benchmarks.md.

Every workload runs once per round, the order rotated between rounds, and baselines run in the same rounds
as chatd, so a ratio always compares numbers measured minutes apart on the same machine state. Reported
values are medians over rounds; ratios are medians of the per-round ratios. Nothing here is a test: no
number fails a build, the report says which targets pass.

    .venv/bin/python -m bench [--rounds N] [--quick] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import msgspec

from bench import daemon_bench as db
from bench.report import write_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = [10, 100, 1_000, 10_000]
UNKNOWN = "bench/noSuchMethod"  # chatd answers -32601 at once; the baseline echoes it


def _run(module: str, *args: Any) -> Any:
    out = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, check=True,
                         capture_output=True).stdout
    return msgspec.json.decode(out)


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


class Bench:
    def __init__(self, rounds: int, quick: bool, work: str) -> None:
        self.rounds = rounds
        self.work = work
        self.n_ping = 1500 if quick else 3000
        self.n_pipe = 15000 if quick else 30000
        self.n_turns = 20 if quick else 30
        self.n_persist = 100 if quick else 200
        self.results: dict[str, list[Any]] = {}
        self.samples: dict[str, list[float]] = {}  # pooled ping samples, for the plot

    def add(self, key: str, value: Any) -> None:
        self.results.setdefault(key, []).append(value)

    # ------------------------------------------------------------ set-up
    def setup(self) -> None:
        t0 = time.perf_counter()
        template = os.path.join(self.work, "template.db")
        prefixes = [f"{kind}{r}-" for r in range(self.rounds) for kind in ("s", "p", "q")] + ["prof-"]
        db.populate(template, SIZES, prefixes)
        self.home = os.path.join(self.work, "daemon")
        os.makedirs(os.path.join(self.home, "data"), mode=0o700)
        shutil.copy(template, os.path.join(self.home, "data", "chatd.db"))
        self.inproc_db = os.path.join(self.work, "inproc.db")
        shutil.copy(template, self.inproc_db)
        self.daemon = db.Daemon(self.home)
        self.daemon.start()
        self.baseline_sock = os.path.join(self.work, "echo.sock")
        read_end, write_end = os.pipe()
        self.baseline = subprocess.Popen([sys.executable, "-m", "bench.baseline_echo_server", self.baseline_sock,
                                          str(write_end)], cwd=ROOT, pass_fds=(write_end,))
        os.close(write_end)
        assert os.read(read_end, 64) == b"ready\n"
        os.close(read_end)
        print(f"set-up: {time.perf_counter() - t0:.1f} s (history pre-populated through chatd.store.Store)")

    def teardown(self) -> None:
        self.daemon.stop()
        self.baseline.terminate()
        self.baseline.wait()

    # ------------------------------------------------------------ workloads
    def ping(self, name: str, sock: str, method: str) -> None:
        us = _run("bench.client", "ping", sock, method, self.n_ping)["us"]
        self.add(f"ping.{name}.p50", pct(us, 0.50))
        self.add(f"ping.{name}.p99", pct(us, 0.99))
        self.samples.setdefault(name, []).extend(us)

    def pipe(self, name: str, sock: str, method: str) -> None:
        out = _run("bench.client", "pipe", sock, method, self.n_pipe, 64)
        self.add(f"pipe.{name}", out["count"] / out["seconds"])

    def startup(self, r: int) -> None:
        out = db.startup(os.path.join(self.work, f"start{r}"))
        for key, value in out.items():
            self.add(f"start.chatd.{key}", value)

    def bare_python(self) -> None:
        for key, value in db.bare_python().items():
            self.add(f"start.python.{key}", value)

    def turns_socket(self, r: int) -> None:
        for size in _rotate(SIZES, r):
            us = _run("bench.client", "send", self.daemon.socket, f"s{r}-{size}", self.n_turns + 1)["us"]
            self.add(f"turn.socket.{size}.cold", us[0])
            self.add(f"turn.socket.{size}", statistics.median(us[1:]))

    def turns_inproc(self, r: int, kind: str) -> None:
        prefix = "p" if kind == "daemon" else "q"
        for size in _rotate(SIZES, r):
            args = ["turns", self.inproc_db, f"{prefix}{r}-{size}", self.n_turns]
            if kind == "fixed":
                args.append("--o1-echo")
            out = _run("bench.daemon_bench", *args)
            self.add(f"turn.{kind}.{size}.cold", out["cold_us"])
            self.add(f"turn.{kind}.{size}", statistics.median(out["us"]))

    def persist(self, r: int) -> None:
        out = _run("bench.daemon_bench", "persist", os.path.join(self.work, f"persist{r}.db"), self.n_persist)
        for key, values in out.items():
            self.add(f"persist.{key}", statistics.median(values))

    def run(self) -> None:
        for r in range(self.rounds):
            t0 = time.perf_counter()
            steps: list[Callable[[], None]] = [
                lambda: self.ping("chatd", self.daemon.socket, UNKNOWN),
                lambda: self.ping("baseline", self.baseline_sock, UNKNOWN),
                lambda: self.ping("chatd-status", self.daemon.socket, "daemon/status"),
                lambda: self.pipe("chatd", self.daemon.socket, UNKNOWN),
                lambda: self.pipe("baseline", self.baseline_sock, UNKNOWN),
                lambda: self.pipe("chatd-status", self.daemon.socket, "daemon/status"),
                lambda: self.startup(r),
                self.bare_python,
                lambda: self.turns_socket(r),
                lambda: self.turns_inproc(r, "daemon"),
                lambda: self.turns_inproc(r, "fixed"),
                lambda: self.persist(r),
            ]
            for step in _rotate(steps, r):
                step()
            print(f"round {r + 1}/{self.rounds}: {time.perf_counter() - t0:.1f} s")
        self.results["rss.after_bench_mb"] = [self.daemon.rss_mb()]
        self.profile = _run("bench.daemon_bench", "profile", self.inproc_db, f"prof-{SIZES[-1]}", self.n_turns)


def _rotate(items: list, r: int) -> list:
    k = r % len(items)
    return items[k:] + items[:k]


def machine() -> dict[str, str]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import pygls
    from importlib.metadata import version

    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": f"pygls {version('pygls')}, msgspec {msgspec.__version__}, SQLite {sqlite3.sqlite_version}",
        "disk": _fs_type(tempfile.gettempdir()),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def _fs_type(path: str) -> str:
    try:
        out = subprocess.run(["df", "-T", path], capture_output=True, text=True).stdout.splitlines()[-1].split()
        return f"{path} on {out[1]}"
    except (OSError, IndexError):
        return path


def ensure_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("installing matplotlib into this environment (bench only)")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], check=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (>= 3)")
    ap.add_argument("--quick", action="store_true", help="fewer samples per round (a smoke run)")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    ap.add_argument("--img", default=os.path.join(ROOT, "docs", "img", "benchmarks.png"))
    args = ap.parse_args(argv)
    ensure_matplotlib()
    t0 = time.perf_counter()
    work = tempfile.mkdtemp(prefix="chatd-bench-")
    bench = Bench(max(args.rounds, 1), args.quick, work)
    try:
        bench.setup()
        bench.run()
    finally:
        if hasattr(bench, "daemon"):
            bench.teardown()
        shutil.rmtree(work, ignore_errors=True)
    write_report(bench, machine(), args.out, args.img, time.perf_counter() - t0)
    print(f"wrote {os.path.relpath(args.out, ROOT)} and {os.path.relpath(args.img, ROOT)}"
          f" in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
