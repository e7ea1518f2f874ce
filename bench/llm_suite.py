"""The turn suite (issue #10, T2–T5, T8, T9): chatd, a direct client and the peers on one fake OpenAI server.

One fake (`bench/fake_openai.py`, own process) serves every client; the model name picks the behaviour.
chatd runs as a real `chatd serve` whose config.toml adds an openai-compatible endpoint at the fake and a
model per behaviour. Each round runs every workload once, in an order rotated between rounds; ratios are
taken per round and their median reported. The peers (openai, litellm, lm-deluge, llm) live in their own
venv, bench/.peers-venv, installed from PyPI on first use, and never in chatd's dependencies.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import msgspec

from bench import daemon_bench as db
from bench.fake_openai import FakeServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS_VENV = os.path.join(ROOT, "bench", ".peers-venv")
PEER_PACKAGES = ["litellm", "lm-deluge", "llm", "openai"]
PEERS = ["openai", "litellm", "lmdeluge", "llm"]
MODELS = {  # model name -> what the fake does (see bench/fake_openai.py)
    "turn": "fake_c5",  # T2, T5: a short reply, 5 chunks
    "stream": "fake_c500",  # T3: 500 chunks back to back
    "wide": "fake_c20_g100",  # T4: 20 deltas 100 ms apart
    "429": "fake_f429_r0",
    "500": "fake_f500",
    "drop": "fake_c50_fdrop_d10",
}


def peers_python() -> str | None:
    """The peers' venv interpreter, created and filled from PyPI on first use; None if that fails."""
    py = os.path.join(PEERS_VENV, "bin", "python")
    probe = "import litellm, lm_deluge, llm, openai"
    if os.path.exists(py) and subprocess.run([py, "-c", probe], capture_output=True).returncode == 0:
        return py
    print(f"installing the peers ({', '.join(PEER_PACKAGES)}) into {os.path.relpath(PEERS_VENV, ROOT)} (once)")
    try:
        if not os.path.exists(py):
            subprocess.run([sys.executable, "-m", "venv", PEERS_VENV], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    except (OSError, subprocess.CalledProcessError) as err:
        print(f"peers unavailable ({err}); the peer columns stay empty")
        return None
    return py


def _json_tail(out: bytes) -> Any:
    """The last line of a worker's stdout (lm-deluge prints its own lines before it)."""
    lines = [line for line in out.splitlines() if line.strip()]
    return msgspec.json.decode(lines[-1])


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class LlmBench:
    def __init__(self, rounds: int, quick: bool, work: str, with_peers: bool = True) -> None:
        self.rounds, self.quick, self.work = rounds, quick, work
        self.n_turns = 15 if quick else 100  # T2, sequential turns per leg (p99 of 400 a side a round)
        self.n_stream = 4 if quick else 25  # T3, 500-chunk turns per leg
        self.legs = 4  # T2, T3: alternating chatd/direct legs per round
        self.n_wide = 1000  # T4 streams (the target's number, also in --quick)
        self.n_conc = 400 if quick else 1000  # T5 turns at 100 in flight
        self.n_batch = 2000 if quick else 10_000  # T5 chat/batch prompts
        self.n_slow_peer = 100 if quick else 300  # litellm and llm at 100 in flight (~100/s)
        self.n_fail = 20 if quick else 100  # T9 per kind per round
        self.n_leak = 300 if quick else 1000  # T9 injected failures before the leak check
        self.n_cli = 5 if quick else 8  # T8 one-shots per round
        self.results: dict[str, list[Any]] = {}
        self.notes: dict[str, Any] = {}
        self.peers_py = peers_python() if with_peers else None

    def add(self, key: str, value: Any) -> None:
        self.results.setdefault(key, []).append(value)

    # ------------------------------------------------------------ set-up
    def setup(self) -> None:
        self.fake = FakeServer(self.work)
        self.home = os.path.join(self.work, "llm-daemon")
        os.makedirs(os.path.join(self.home, "config"), mode=0o700)
        with open(os.path.join(self.home, "config", "config.toml"), "w") as f:
            f.write(self.config_toml())
        self.daemon = db.Daemon(self.home)
        self.daemon.start()
        self.llm_home = os.path.join(self.work, "llm-user")
        os.makedirs(self.llm_home)
        with open(os.path.join(self.llm_home, "extra-openai-models.yaml"), "w") as f:
            for model in MODELS.values():
                f.write(f"- model_id: {model}\n  model_name: {model}\n  api_base: {self.fake.url}\n")

    def config_toml(self) -> str:
        lines = ["[providers.fake]", 'kind = "openai-compatible"', f'base-url = "{self.fake.url}"',
                 'api-key = "sk-bench-0000"', "",
                 # 1,000 streams at once need the daemon-wide cap (64 by default) raised; one try per model
                 # so an injected failure reaches the client as it happens (T9), no cooldown after it
                 "[routing]", "max-concurrent = 2000", "max-attempts = 1", "failure-cooldown = 0.0", "",
                 # T4 puts 125 turns on each of 8 connections (16 per connection by default)
                 "[limits]", "max-turns-per-connection = 1000", ""]
        for model in MODELS.values():
            lines += [f"[models.{model}]", 'provider = "fake"', f'api-model = "{model}"', ""]
        return "\n".join(lines)

    def teardown(self) -> None:
        self.daemon.stop()
        self.fake.stop()

    # ------------------------------------------------------------ helpers
    def load(self, *args: Any) -> Any:
        proc = subprocess.run([sys.executable, "-m", "bench.llm_load", *map(str, args)], capture_output=True)
        if proc.returncode != 0:
            raise RuntimeError(f"llm_load {args[:1]} failed:\n{proc.stderr.decode(errors='replace')[-2000:]}")
        return msgspec.json.decode(proc.stdout)

    def peer(self, *args: Any, timeout: float = 240) -> Any:
        env = {**os.environ, "LLM_USER_PATH": self.llm_home, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
               "PYTHONPATH": ""}
        proc = subprocess.run([self.peers_py, os.path.join(ROOT, "bench", "peer_worker.py"), *map(str, args)],
                              capture_output=True, env=env, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"peer {args[:2]} failed:\n{proc.stderr.decode(errors='replace')[-2000:]}")
        return _json_tail(proc.stdout)

    # ------------------------------------------------------------ workloads
    def t2(self, r: int) -> None:
        self._alternated("t2", MODELS["turn"], self.n_turns, 2, r)

    def _alternated(self, key: str, model: str, count: int, skip: int, r: int) -> None:
        """chatd and the direct client in `self.legs` alternating legs of `count` turns (each chatd leg on a
        fresh conversation, its first `skip` turns dropped), samples pooled per side: a burst of machine
        noise then lands on both sides instead of on one (one leg each varied the T2 ratio 2.2-3.9x)."""
        pooled: dict[str, dict[str, list]] = {"chatd": {}, "direct": {}}
        for leg in range(self.legs):
            for side in ("chatd", "direct") if leg % 2 == 0 else ("direct", "chatd"):
                if side == "chatd":
                    out = self.load("send", self.daemon.socket, model, count + skip, f"{key}-{r}-{leg}")
                else:
                    out = self.load("direct", self.fake.url, model, count + skip)
                for field in ("us", "first_us", "deltas"):
                    pooled[side].setdefault(field, []).extend(out[field][skip:])
                pooled[side].setdefault("errors", []).extend(out.get("errors") or [])
        for side, samples in pooled.items():
            self._turn_stats(f"{key}.{side}", samples)

    def _turn_stats(self, key: str, out: dict, skip: int = 0) -> None:
        us = out["us"][skip:]
        self.add(f"{key}.p50", pct(us, 0.5))
        self.add(f"{key}.p99", pct(us, 0.99))
        self.add(f"{key}.first", _med(out["first_us"][skip:]))
        self.add(f"{key}.deltas", _med(out["deltas"][skip:]))
        if out.get("errors"):
            self.add(f"{key}.errors", len(out["errors"]))

    def t3(self, r: int) -> None:
        self._alternated("t3", MODELS["stream"], self.n_stream, 1, r)

    def t4(self, r: int) -> None:
        """1,000 streams at once through the daemon, then the same direct."""
        pid = self.daemon.proc.pid
        c0 = cpu_seconds(pid)
        out = self.load("fanout", self.daemon.socket, MODELS["wide"], self.n_wide, self.n_wide, 8, f"t4-{r}-")
        cpu = cpu_seconds(pid) - c0
        for k in ("wall", "deltas", "errors", "p50", "p99"):
            self.add(f"t4.chatd.{k}", out[k])
        self.add("t4.chatd.cpu_us_per_delta", cpu / max(out["deltas"], 1) * 1e6)
        if out["errors"]:
            self.notes.setdefault("t4.chatd.error_sample", out["error_sample"])
        out = self.load("direct-fanout", self.fake.url, MODELS["wide"], self.n_wide, self.n_wide)
        for k in ("wall", "deltas", "errors", "p50", "p99"):
            self.add(f"t4.direct.{k}", out[k])

    def t5(self, r: int) -> None:
        out = self.load("fanout", self.daemon.socket, MODELS["turn"], self.n_conc, 100, 8, f"t5-{r}-")
        self.add("t5.chatd.rate", (self.n_conc - out["errors"]) / out["wall"])
        self.add("t5.chatd.errors", out["errors"])
        out = self.load("direct-fanout", self.fake.url, MODELS["turn"], self.n_conc, 100)
        self.add("t5.direct.rate", (self.n_conc - out["errors"]) / out["wall"])

    def t5_batch(self, r: int) -> None:
        out = self.load("batch", self.daemon.socket, MODELS["turn"], self.n_batch, 100)
        self.add("t5.batch.rate", out["ok"] / out["wall"])
        self.add("t5.batch.failed", out["failed"])

    def t9(self, r: int) -> None:
        for kind in ("429", "500", "drop"):
            out = self.load("fail", self.daemon.socket, MODELS[kind], self.n_fail, f"t9-{kind}-{r}")
            self.add(f"t9.chatd.{kind}", _med(out["us"]))
            self.notes[f"t9.chatd.{kind}.codes"] = out["kinds"]
            out = self.load("direct-fail", self.fake.url, MODELS[kind], self.n_fail)
            self.add(f"t9.direct.{kind}", _med(out["us"]))
            self.notes[f"t9.direct.{kind}.kinds"] = out["kinds"]

    def t8(self, r: int) -> None:
        chatd = shutil.which("chatd", path=os.path.dirname(sys.executable))
        cmd = [chatd, "call"] if chatd else [sys.executable, "-m", "chatd", "call"]
        env = db.daemon_env(self.home)
        walls = []
        for i in range(self.n_cli):
            params = msgspec.json.encode({"conversation": f"t8-{r}-{i}", "text": "hi", "models": [MODELS["turn"]]})
            t0 = time.perf_counter()
            proc = subprocess.run([*cmd, "chat/send", params.decode(), "--no-start"], env=env, capture_output=True)
            walls.append((time.perf_counter() - t0) * 1000)
            if proc.returncode != 0:
                raise RuntimeError(f"chatd call failed: {proc.stdout[-500:]!r} {proc.stderr[-500:]!r}")
        self.add("t8.chatd", _med(walls))
        bare = []
        for _ in range(self.n_cli):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], check=True)
            bare.append((time.perf_counter() - t0) * 1000)
        self.add("t8.python", _med(bare))
        if self.peers_py:
            llm_cli = os.path.join(PEERS_VENV, "bin", "llm")
            env = {**os.environ, "LLM_USER_PATH": self.llm_home, "OPENAI_API_KEY": "sk-bench-0000", "PYTHONPATH": ""}
            walls = []
            for _ in range(max(2, self.n_cli // 2)):
                t0 = time.perf_counter()
                subprocess.run([llm_cli, "-m", MODELS["turn"], "hi"], env=env, check=True, capture_output=True)
                walls.append((time.perf_counter() - t0) * 1000)
            self.add("t8.llm", _med(walls))

    def peers(self, r: int) -> None:
        if not self.peers_py:
            return
        url = self.fake.url
        for lib in _rotate(PEERS, r):
            t0 = time.perf_counter()
            n = self.n_batch if lib == "lmdeluge" else self.n_slow_peer if lib in ("litellm", "llm") else self.n_conc
            models = ",".join((MODELS["turn"], MODELS["stream"], MODELS["500"]))
            # 3 failures: the peers' own retries (llm keeps the openai SDK's 2 retries with backoff) are slow
            out = self.peer("suite", lib, url, models, self.n_turns, self.n_stream, n, 3)
            self._turn_stats(f"t2.{lib}", out["turns"])
            if "stream" in out:
                self._turn_stats(f"t3.{lib}", out["stream"])
            self.add(f"t5.{lib}.rate", out["concurrent"]["ok"] / out["concurrent"]["wall"])
            self.add(f"t5.{lib}.errors", out["concurrent"]["errors"])
            self.add(f"t9.{lib}.500", _med(out["fail"]["us"]))
            print(f"  peer {lib}: {time.perf_counter() - t0:.1f} s")

    def leak_check(self) -> None:
        """T9: fds of the daemon and connections open at the fake, before and after n_leak injected failures."""
        pid = self.daemon.proc.pid
        time.sleep(0.5)
        before = (fd_count(pid), self.fake.stats()["open"])
        per = self.n_leak // 3
        for kind in ("429", "500", "drop"):
            self.load("fail", self.daemon.socket, MODELS[kind], per, f"leak-{kind}")
        self.load("send", self.daemon.socket, MODELS["turn"], 3, "leak-after")  # the pool still works
        time.sleep(0.5)
        after = (fd_count(pid), self.fake.stats()["open"])
        self.notes["t9.leak"] = {"failures": per * 3, "fds_before": before[0], "fds_after": after[0],
                                 "open_before": before[1], "open_after": after[1]}

    def imports_check(self) -> None:
        """T8: what `chatd call` imports (it must load neither httpx nor pygls)."""
        params = msgspec.json.encode({"conversation": "t8-imports", "text": "hi", "models": [MODELS["turn"]]})
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "chatd", "call", "chat/send",
                               params.decode(), "--no-start"], env=db.daemon_env(self.home), capture_output=True,
                              text=True)
        names = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")]
        heavy = sorted({n.split(".")[0] for n in names if n.split(".")[0] in ("httpx", "pygls", "lsprotocol",
                                                                                  "aiohttp", "asyncio")})
        self.notes["t8.imports"] = {"modules": len(names), "heavy": heavy}

    def run(self) -> None:
        for r in range(self.rounds):
            t0 = time.perf_counter()
            steps: list[Callable[[], None]] = [
                lambda: self.t2(r), lambda: self.t3(r), lambda: self.t4(r), lambda: self.t5(r),
                lambda: self.t5_batch(r), lambda: self.t9(r), lambda: self.t8(r), lambda: self.peers(r),
            ]
            for step in _rotate(steps, r):
                step()
            print(f"turn suite round {r + 1}/{self.rounds}: {time.perf_counter() - t0:.1f} s")
        self.leak_check()
        self.imports_check()
        self.notes["rss_after_mb"] = self.daemon.rss_mb()


def _rotate(items: list, r: int) -> list:
    k = r % len(items)
    return items[k:] + items[:k]
