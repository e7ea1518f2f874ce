"""Daemon workloads: start-up and idle memory, history pre-population, and the daemon-side turn.

The daemon runs as a real `python -m chatd serve` on a private CHATD_HOME, started the way tests/helpers.py
does (a --ready-fd pipe). The daemon-side turn is timed in a worker process that drives the same
`ConversationService` the daemon uses, on its own copy of the database: `chat/send` from params to the
committed SQLite transaction and the published notifications, without the socket.

    python -m bench.daemon_bench turns DB CONVERSATIONS COUNT  -> per conversation {"us": [...], "cold_us": first turn}
    python -m bench.daemon_bench body DB CONVERSATION COUNT    -> {"us": [...]}: its OpenAI request body
    python -m bench.daemon_bench profile DB CONVERSATION COUNT   -> cProfile's top functions per warm turn
    python -m bench.daemon_bench populate DB SIZES PREFIXES      (comma-separated lists)
    python -m bench.daemon_bench persist DB COUNT                -> commit_turn vs write+fsync, in µs
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Callable

import msgspec

_encode = msgspec.json.Encoder().encode


def daemon_env(home: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_")}
    env["CHATD_HOME"] = home
    env["CHATD_LOG_LEVEL"] = "WARNING"
    return env


class Daemon:
    """A `chatd serve` subprocess; `start()` returns seconds from spawn to the ready signal."""

    def __init__(self, home: str) -> None:
        self.home = home
        self.socket = os.path.join(home, "run", "chatd.sock")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> float:
        read_end, write_end = os.pipe()
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chatd", "serve", "--ready-fd", str(write_end)],
            env=daemon_env(self.home), pass_fds=(write_end,), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        os.close(write_end)
        try:
            ready, _, _ = select.select([read_end], [], [], timeout)
            line = os.read(read_end, 64) if ready else b""
        finally:
            os.close(read_end)
        if line != b"ready\n":
            self.proc.kill()
            _, err = self.proc.communicate()
            raise RuntimeError(f"chatd serve did not start: {err.decode(errors='replace')}")
        return time.perf_counter() - t0

    def rss_mb(self) -> float:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def request_once(path: str, method: str, params: Any = None) -> dict:
    """One blocking request on a fresh connection (the first request a client makes)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        body = _encode({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        sock.sendall(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        buf = b""
        while True:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("daemon closed the connection")
            buf += data
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                length = int(buf[:end].partition(b":")[2])
                if len(buf) >= end + 4 + length:
                    return msgspec.json.decode(buf[end + 4:end + 4 + length])


def startup(home: str) -> dict[str, float]:
    """Spawn to ready, spawn to the first answered `daemon/status`, and idle RSS right after it."""
    daemon = Daemon(home)
    t0 = time.perf_counter()
    try:
        ready_s = daemon.start()
        reply = request_once(daemon.socket, "daemon/status")
        first_s = time.perf_counter() - t0
        assert "result" in reply, reply
        rss = daemon.rss_mb()
    finally:
        daemon.stop()
    return {"ready_ms": ready_s * 1000, "first_ms": first_s * 1000, "rss_mb": rss}


def bare_python() -> dict[str, float]:
    """The floor for any Python process: `python -I -S -c pass`, and its RSS."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], check=True)
    wall = time.perf_counter() - t0
    out = subprocess.run([sys.executable, "-I", "-S", "-c",
                          "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])"],
                         check=True, capture_output=True, text=True).stdout
    return {"first_ms": wall * 1000, "rss_mb": int(out) / 1024}


# ---------------------------------------------------------------- history
def user_text(i: int) -> str:
    return f"turn {i}: hello there, this is a message of ordinary length for a chat"


def populate(db_path: str, sizes: list[int], copies: list[str]) -> dict[str, int]:
    """Create conversations `{copy}{size}` holding `size` messages each, through chatd's own Store.

    One conversation per size is built turn by turn (commit_turn, two messages a turn); the copies are
    `Store.fork`s of it. Returns the message count per conversation name.
    """
    from chatd import protocol as p
    from chatd.providers.echo import NOTICE
    from chatd.store import NewMessage, Store, TurnRecord

    store = Store(db_path)
    made: dict[str, int] = {}
    usage = p.Usage(input_tokens=10, output_tokens=20)
    for size in sizes:
        source = store.create(f"src{size}", models=["echo"])
        for i in range(size // 2):
            now = time.time()
            text = user_text(i)
            record = TurnRecord(id=os.urandom(16).hex(), model="echo", provider="echo",
                                attempts=[p.Attempt(model="echo", outcome="ok", latency_ms=0.1)], usage=usage,
                                cost=0.0, finish_reason="stop", started_at=now, finished_at=now)
            store.commit_turn(source.id, record, [
                NewMessage(role="user", parts=[p.TextPart(text)]),
                NewMessage(role="assistant", parts=[p.TextPart(f"{NOTICE} You said: {text}")], model="echo"),
            ])
        source = store.get_by_id(source.id)
        for prefix in copies:
            fork = store.fork(source, f"{prefix}{size}", None)
            made[fork.name] = fork.message_count
    store.close()
    return made


# ---------------------------------------------------------------- worker: daemon-side turns
class _NullConn:
    """A subscriber that drops what it is sent; the hub still encodes every notification for it."""

    def send_body(self, body: bytes, *args: Any) -> None:  # newer hubs pass a delta flag too
        pass


def _service(db_path: str):
    from chatd.conversation import ConversationService
    from chatd.models import ModelRegistry
    from chatd.providers.echo import EchoProvider
    from chatd.routing import Router
    from chatd.server.hub import Hub
    from chatd.store import Store

    store = Store(db_path)
    return store, ConversationService(store, ModelRegistry(), {"echo": EchoProvider()}, Hub(), router=Router(0))


async def _turns(db_path: str, conversation: str, count: int, profiler: Any = None) -> dict[str, Any]:
    from chatd import protocol as p

    store, service = _service(db_path)
    origin = _NullConn()
    clock = time.perf_counter_ns
    samples = []
    for i in range(count + 1):
        params = p.ChatSendParams(conversation=conversation, text=f"turn {i}: hello there")
        if i == 1 and profiler is not None:
            profiler.enable()  # warm turns only: the first one loads the history into the cache
        t0 = clock()
        await service.send(params, origin=origin)
        samples.append((clock() - t0) / 1000)
    if profiler is not None:
        profiler.disable()
    await service.close()  # its background fold step first, as the daemon's shutdown does
    store.close()
    return {"cold_us": samples[0], "us": samples[1:]}


def _rounds(db_path: str, conversations: list[str], count: int) -> dict[str, Any]:
    """`_turns` on each conversation in turn, after as many on a new one: the first run in a process is up
    to 1.7× slower (the interpreter's specialisation and allocator warming up), whatever its history."""
    from chatd.store import Store

    store = Store(db_path)
    warm = store.create(f"warm-up-{os.getpid()}", models=["echo"]).name
    store.close()
    asyncio.run(_turns(db_path, warm, count))
    return {conv: asyncio.run(_turns(db_path, conv, count)) for conv in conversations}


def _body(db_path: str, conversation: str, count: int) -> dict[str, Any]:
    """What a real provider adds to a turn, O(history) by the API's nature: the OpenAI Chat Completions body
    of the whole history plus a new message, built (`openai_chat.build_request`) and JSON-encoded as the
    provider does before every request (the echo model of the turn columns sends nothing)."""
    from chatd import protocol as p
    from chatd.models import ModelRegistry
    from chatd.providers.base import ProviderRequest
    from chatd.providers.openai_chat import build_request
    from chatd.store import Store

    store = Store(db_path)
    history = store.messages(store.get(conversation).id)
    store.close()
    text = user_text(len(history))
    user = p.MessageOut(seq=len(history) + 1, role="user", text=text, parts=[p.TextPart(text)], created_at=time.time())
    request = ProviderRequest(model=ModelRegistry().get("echo"), system=None, messages=[*history, user])
    samples = []
    for _ in range(count):
        t0 = time.perf_counter_ns()
        _encode(build_request(request))
        samples.append((time.perf_counter_ns() - t0) / 1000)
    return {"us": samples}


def _profile(db_path: str, conversation: str, count: int, top: int = 8) -> dict[str, Any]:
    import cProfile
    import pstats

    prof = cProfile.Profile()
    out = asyncio.run(_turns(db_path, conversation, count, profiler=prof))
    stats = pstats.Stats(prof).stats  # {(file, line, func): (cc, ncalls, tottime, cumtime, callers)}
    rows = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    total = sum(v[2] for v in stats.values())
    return {
        "turns": count, "conversation": conversation, "total_us": total / count * 1e6,
        "median_us_profiled": sorted(out["us"])[len(out["us"]) // 2],
        "rows": [{"function": f"{os.path.basename(k[0])}:{k[1]}({k[2]})", "calls": v[1] / count,
                  "tottime_us": v[2] / count * 1e6, "cumtime_us": v[3] / count * 1e6} for k, v in rows],
    }


class _TimedDb:
    """A stand-in for the store's sqlite3 connection that times each statement, keyed by its first words."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.times: dict[str, list[float]] = {}

    def _timed(self, fn: Any, sql: str, *args: Any) -> Any:
        words = sql.split()
        key = " ".join(words[:3] if words[0] == "INSERT" else words[:2] if words[0] == "BEGIN" else words[:1])
        t0 = time.perf_counter_ns()
        try:
            return fn(sql, *args)
        finally:
            self.times.setdefault(key, []).append((time.perf_counter_ns() - t0) / 1000)

    def execute(self, sql: str, *args: Any) -> Any:
        return self._timed(self.db.execute, sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        return self._timed(self.db.executemany, sql, *args)

    def __getattr__(self, name: str) -> Any:  # in_transaction, commit, ...: the real connection's
        return getattr(self.db, name)


async def _grouped_commits(store: Any, convs: list, turn: Callable, rounds: int, clock: Callable) -> list[float]:
    """µs per turn when len(convs) turns share one COMMIT (`Store.commit_turn_grouped`), per round."""
    out = []
    for i in range(rounds):
        turns = [turn(i * len(convs) + k) for k in range(len(convs))]
        t0 = clock()
        await asyncio.gather(*(store.commit_turn_grouped(c.id, *t) for c, t in zip(convs, turns)))
        out.append((clock() - t0) / 1000 / len(convs))
    return out


def _persist(db_path: str, count: int) -> dict[str, Any]:
    """One turn's commit (two messages and a provenance row) vs the same bytes appended with write+fsync.

    The store is the daemon's (background checkpoints). `commit_normal_us` is a store in use: measured after
    enough commits that the WAL has been checkpointed and restarted at least once, so commits overwrite the
    WAL's pages instead of growing the file; `commit_fresh_us` is the first `count` commits of a new store.
    `tail_*` is a daemon's pace (1 ms between commits, outside the timing) with the checkpoints in the
    background and, for comparison, inline as SQLite does them by default."""
    from chatd import protocol as p
    from chatd.store import NewMessage, Store, TurnRecord

    store = Store(db_path, background_checkpoints=True)
    conv = store.create("persist", models=["echo"])
    usage = p.Usage(input_tokens=10, output_tokens=20)
    clock = time.perf_counter_ns

    def turn(i: int) -> tuple[TurnRecord, list[NewMessage]]:
        now = time.time()
        record = TurnRecord(id=os.urandom(16).hex(), model="echo", provider="echo",
                            attempts=[p.Attempt(model="echo", outcome="ok")], usage=usage, cost=0.0,
                            finish_reason="stop", started_at=now, finished_at=now)
        return record, [NewMessage(role="user", parts=[p.TextPart(user_text(i))]),
                        NewMessage(role="assistant", parts=[p.TextPart("reply " + user_text(i))], model="echo")]

    def commits(target: Any, conv_id: int, n: int, pause: float = 0.0) -> list[float]:
        out = []
        for i in range(n):
            record, messages = turn(i)
            if pause:
                time.sleep(pause)
            t0 = clock()
            target.commit_turn(conv_id, record, messages)
            out.append((clock() - t0) / 1000)
        return out

    out: dict[str, list[float]] = {"commit_fresh_us": commits(store, conv.id, count)}
    while store.checkpoints < 2:  # warm: the WAL has been checkpointed (and then restarted) in the background
        commits(store, conv.id, 50)
    store._checkpointer._pool.submit(lambda: None).result()  # type: ignore[union-attr]  # not mid-pass
    out["commit_normal_us"] = commits(store, conv.id, count)
    store._db.execute("PRAGMA synchronous=FULL")  # FULL only to show the cost of the other choice
    out["commit_full_us"] = commits(store, conv.id, count)
    store._db.execute("PRAGMA synchronous=NORMAL")
    # group commit (what the daemon does): 10 turns on 10 conversations finishing in one loop iteration
    group = [store.create(f"persist-{k}", models=["echo"]) for k in range(10)]
    out["commit_grouped10_us"] = asyncio.run(_grouped_commits(store, group, turn, count // 10, clock))
    timer = _TimedDb(store._db)
    store._db = timer  # per-statement split of the same commit (the proxy adds ~0.3 µs a statement)
    commits(store, conv.id, count)
    store._db = timer.db
    out["tail_background_us"] = commits(store, conv.id, 5 * count, pause=0.001)
    store.close()
    inline = Store(db_path + ".inline")  # SQLite's default: a COMMIT checkpoints every 1,000 pages itself
    inline_id = inline.create("persist", models=["echo"]).id
    commits(inline, inline_id, 5 * count)
    out["tail_inline_us"] = commits(inline, inline_id, 5 * count, pause=0.001)
    inline.close()
    out["statements_us"] = {k: sorted(v)[len(v) // 2] for k, v in timer.times.items()}  # type: ignore[assignment]
    blob = _encode([m.parts for m in turn(0)[1]])
    out["fsync_us"] = []
    fd = os.open(db_path + ".raw", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(count):
            t0 = clock()
            os.write(fd, blob)
            os.fsync(fd)
            out["fsync_us"].append((clock() - t0) / 1000)
    finally:
        os.close(fd)
        os.unlink(db_path + ".raw")
    return out


def collapse_spy(raw_path: str, top: int = 8) -> dict[str, Any]:
    """py-spy's raw (collapsed-stack) output -> the event loop thread's share of busy samples per function,
    self and inclusive (py-spy counts a thread blocked in a queue's get as busy: other threads are left out)."""
    self_n: dict[str, int] = {}
    incl_n: dict[str, int] = {}
    busy = idle = 0
    with open(raw_path) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            n = int(count)
            frames = [fr.rsplit(":", 1)[0] + ")" if ":" in fr else fr for fr in stack.split(";")]  # drop line nos
            if frames[0].startswith("Thread._bootstrap"):
                continue  # another thread (the WAL checkpointer, idle or not): not the event loop's time
            if frames[-1].startswith("EpollSelector.select") or frames[-1].startswith("select ("):
                idle += n
                continue
            busy += n
            self_n[frames[-1]] = self_n.get(frames[-1], 0) + n
            for fr in set(frames):
                incl_n[fr] = incl_n.get(fr, 0) + n
    mine = [k for k in incl_n if "chatd/" in k or "pygls/" in k or "asyncio/" in k]
    return {
        "busy_share": busy / max(busy + idle, 1),
        "self": sorted(((k, v / busy) for k, v in self_n.items()), key=lambda kv: -kv[1])[:top],
        "inclusive": sorted(((k, incl_n[k] / busy) for k in mine if incl_n[k] / busy < 0.99),
                            key=lambda kv: -kv[1])[:top],
    }


def main(argv: list[str]) -> None:
    if argv[0] == "turns":  # one process for the conversations of a round: per-process noise cancels in ratios
        out = _rounds(argv[1], argv[2].split(","), int(argv[3]))
    elif argv[0] == "body":
        out = _body(argv[1], argv[2], int(argv[3]))
    elif argv[0] == "profile":
        out = _profile(argv[1], argv[2], int(argv[3]))
    elif argv[0] == "populate":
        out = populate(argv[1], [int(x) for x in argv[2].split(",")], argv[3].split(","))
    elif argv[0] == "persist":
        out = _persist(argv[1], int(argv[2]))
    else:
        raise SystemExit(f"unknown command {argv[0]}")
    sys.stdout.buffer.write(_encode(out))


if __name__ == "__main__":
    main(sys.argv[1:])
