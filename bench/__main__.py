"""`python -m bench`: chatd's benchmarks (issues #2 and #10), interleaved rounds, written to docs/benchmarks.md.

Two suites: *daemon* (this module: ping, throughput, start-up, history, persistence) and *peers*
(bench/llm_suite.py: turns through the daemon vs a direct client and vs litellm, lm-deluge, llm and the
openai SDK, all on one fake OpenAI server). `--suite all` (the default) runs both.

Every workload runs once per round, the order rotated between rounds, and baselines run in the same rounds
as chatd, so a ratio always compares numbers measured minutes apart on the same machine state. Reported
values are medians over rounds; ratios are medians of the per-round ratios. Nothing here is a test: no
number fails a build, the report says which targets pass.

    .venv/bin/python -m bench [--suite daemon|peers|all] [--rounds N] [--quick] [--out docs/benchmarks.md]
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
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {args[:1]} failed:\n{proc.stderr.decode(errors='replace')[-2000:]}")
    out = proc.stdout
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
        _run("bench.daemon_bench", "populate", template, ",".join(map(str, SIZES)), ",".join(prefixes))
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
                                          str(write_end)], pass_fds=(write_end,))
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

    def turns_inproc(self, r: int) -> None:
        sizes = _rotate(SIZES, r)  # in one worker, one after another: a slow process slows every size alike
        runs = _run("bench.daemon_bench", "turns", self.inproc_db, ",".join(f"p{r}-{n}" for n in sizes), self.n_turns)
        for size in sizes:
            out = runs[f"p{r}-{size}"]
            self.add(f"turn.daemon.{size}.cold", out["cold_us"])
            self.add(f"turn.daemon.{size}", statistics.median(out["us"]))

    def bodies(self, r: int) -> None:
        for size in _rotate(SIZES, r):
            out = _run("bench.daemon_bench", "body", self.inproc_db, f"q{r}-{size}", self.n_turns)  # untouched
            self.add(f"turn.body.{size}", statistics.median(out["us"]))

    def persist(self, r: int) -> None:
        out = _run("bench.daemon_bench", "persist", os.path.join(self.work, f"persist{r}.db"), self.n_persist)
        for key, values in out.items():
            if key == "statements_us":
                for stmt, us in values.items():
                    self.add(f"persist.stmt.{stmt}", us)
            elif key.startswith("tail_"):  # the checkpoint stalls: how long the slowest commits take
                ordered = sorted(values)
                self.add(f"persist.{key}.p99", ordered[int(len(ordered) * 0.99)])
                self.add(f"persist.{key}.max", ordered[-1])
            else:
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
                lambda: self.turns_inproc(r),
                lambda: self.bodies(r),
                lambda: self.persist(r),
            ]
            for step in _rotate(steps, r):
                step()
            print(f"round {r + 1}/{self.rounds}: {time.perf_counter() - t0:.1f} s")
        self.results["rss.after_bench_mb"] = [self.daemon.rss_mb()]
        self.profile = _run("bench.daemon_bench", "profile", self.inproc_db, f"prof-{SIZES[-1]}", self.n_turns)
        self.pipe_profile = self.spy_pipelined()
        self.imports = import_times("chatd.app")
        self.imports["rss"] = import_rss(["msgspec", "asyncio", "sqlite3", "lsprotocol.types", "pygls.protocol",
                                          "httpx", "chatd.app"])

    def spy_pipelined(self, seconds: int = 3) -> dict[str, Any] | None:
        """py-spy on the daemon while it serves pipelined requests (not timed); None without py-spy."""
        spy = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
        if spy is None:
            return None
        raw = os.path.join(self.work, "pipe.spy")
        proc = subprocess.Popen([spy, "record", "-p", str(self.daemon.proc.pid), "-d", str(seconds), "-r", "1000",
                                 "--format", "raw", "-o", raw], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while proc.poll() is None:
            _run("bench.client", "pipe", self.daemon.socket, UNKNOWN, 20000, 64)
        if proc.returncode != 0 or not os.path.exists(raw):
            print(f"py-spy failed: {proc.stderr.read().decode(errors='replace')[-300:]}")
            return None
        return db.collapse_spy(raw)


def import_times(module: str, top: int = 6) -> dict[str, Any]:
    """`python -X importtime -c 'import MODULE'`: total and the slowest modules by cumulative time (ms)."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True,
                         text=True, check=True).stderr
    rows = []
    for line in err.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _, cumulative, name = line[len("import time:"):].split("|")
            rows.append((name.strip(), int(cumulative) / 1000))
    total = next((ms for name, ms in rows if name == module), 0.0)
    return {"total_ms": total, "top": sorted((r for r in rows if r[0] != module), key=lambda r: -r[1])[:top]}


def import_rss(modules: list[str]) -> list[tuple[str, float]]:
    """VmRSS growth (MB) as each module is imported in turn into a bare interpreter."""
    code = ("import importlib, sys\n"
            "def rss():\n"
            "    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) / 1024\n"
            "last = rss()\n"
            "for m in sys.argv[1:]:\n"
            "    importlib.import_module(m); now = rss(); print(m, now - last); last = now\n")
    out = subprocess.run([sys.executable, "-c", code, *modules], capture_output=True, text=True, check=True).stdout
    return [(line.split()[0], float(line.split()[1])) for line in out.splitlines()]


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


def use_source(ref: str, work: str) -> str:
    """Make every child process (daemons, workers, clients) import chatd from `ref`, bench from this checkout.

    Children run in `work` with PYTHONPATH=<source>:<checkout>, so the checkout's own directory is not
    first on sys.path. With a git ref, chatd/ and clients/ are exported there: half-finished edits in a
    shared checkout cannot break or skew the run.
    """
    if ref == "worktree":
        src, label = ROOT, "the working tree"
    else:
        commit = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, check=True, capture_output=True,
                                text=True).stdout.strip()
        src = os.path.join(work, "src")
        os.makedirs(src)
        archive = subprocess.run(["git", "archive", commit, "chatd", "clients"], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", src], input=archive, check=True)
        src_client = os.path.join(src, "clients", "python")
        src = f"{src}{os.pathsep}{src_client}"
        subject = subprocess.run(["git", "log", "-1", "--format=%cd", "--date=short", commit], cwd=ROOT,
                                 capture_output=True, text=True).stdout.strip()
        label = f"commit {commit} ({subject})"
    # Byte-compiled as an install would be: with PYTHONDONTWRITEBYTECODE (set on these machines) every
    # child would otherwise compile chatd from source at each start (measured: 48 vs 38 ms for one `chatd call`).
    import compileall

    tree = ROOT if ref == "worktree" else os.path.join(work, "src")
    for path in (os.path.join(tree, "chatd"), os.path.join(tree, "clients"), os.path.join(ROOT, "bench")):
        compileall.compile_dir(path, quiet=1)
    os.environ["PYTHONPATH"] = f"{src}{os.pathsep}{ROOT}"
    os.chdir(work)
    return label


def ensure_bench_tools() -> None:
    """matplotlib for the plots and py-spy for the daemon's profile under load, into this environment."""
    missing = []
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        missing.append("matplotlib")
    if not os.path.exists(os.path.join(os.path.dirname(sys.executable), "py-spy")) and not shutil.which("py-spy"):
        missing.append("py-spy")
    if missing:
        print(f"installing {', '.join(missing)} into this environment (bench only)")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=("daemon", "peers", "all"), default="all")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (>= 3; default 5 daemon, 3 peers)")
    ap.add_argument("--no-peers", action="store_true", help="the turn suite without the peers' venv")
    ap.add_argument("--quick", action="store_true", help="fewer samples per round (a smoke run)")
    ap.add_argument("--ref", default="HEAD",
                    help="git ref whose chatd/ is measured (exported to a temp dir), or 'worktree' for the checkout")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    ap.add_argument("--img", default=os.path.join(ROOT, "docs", "img", "benchmarks.png"))
    ap.add_argument("--peers-img", default=os.path.join(ROOT, "docs", "img", "peers.png"))
    args = ap.parse_args(argv)
    args.out, args.img = os.path.abspath(args.out), os.path.abspath(args.img)
    args.peers_img = os.path.abspath(args.peers_img)
    ensure_bench_tools()
    t0 = time.perf_counter()
    work = tempfile.mkdtemp(prefix="chatd-bench-")
    source = use_source(args.ref, work)
    daemon_rounds = max(args.rounds or (3 if args.quick else 5), 1)
    turn_rounds = max(args.rounds or 3, 1)
    bench = turns = None
    try:
        if args.suite in ("peers", "all"):
            from bench.llm_suite import LlmBench

            turns = LlmBench(turn_rounds, args.quick, os.path.join(work, "turns"), with_peers=not args.no_peers)
            os.makedirs(turns.work)
            try:
                turns.setup()
                turns.run()
            finally:
                if hasattr(turns, "daemon"):
                    turns.teardown()
            print(f"turn suite done at {time.perf_counter() - t0:.0f} s")
        if args.suite in ("daemon", "all"):
            bench = Bench(daemon_rounds, args.quick, work)
            try:
                bench.setup()
                bench.run()
            except Exception:
                if turns is None:
                    raise
                import traceback

                traceback.print_exc()
                print("daemon suite failed; writing the turn suite alone")
                if hasattr(bench, "daemon"):
                    bench.teardown()
                bench = None
            else:
                bench.teardown()
    finally:
        os.chdir(ROOT)
        shutil.rmtree(work, ignore_errors=True)
    section = ""
    if turns is not None:
        from bench import report_llm

        report_llm.plot(report_llm.R(bench.results if bench else {}, turns.results), args.peers_img, turns.rounds)
        section = report_llm.section(turns, bench.results if bench else None,
                                     os.path.relpath(args.peers_img, os.path.dirname(args.out)))
    info = {**machine(), "chatd measured": source}
    if bench is not None:
        write_report(bench, info, args.out, args.img, time.perf_counter() - t0, section)
    else:
        with open(args.out, "w") as f:
            f.write(f"# Benchmarks: chatd and the peers (issue #10)\n\nGenerated by `.venv/bin/python -m bench "
                    f"--suite peers` ({time.perf_counter() - t0:.0f} s).\n\n{section}\n## Machine\n\n"
                    + "".join(f"- {k}: {v}\n" for k, v in info.items()))
    print(f"wrote {os.path.relpath(args.out, ROOT)} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
