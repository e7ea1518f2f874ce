"""The turn suite's part of docs/benchmarks.md: the T1–T9 table (issue #10), the peers side by side, one PNG."""

from __future__ import annotations

import statistics
from typing import Any

PEER_NAMES = {"openai": "openai SDK", "litellm": "litellm.acompletion", "lmdeluge": "lm-deluge LLMClient",
              "llm": "llm (Python API)"}


class R:
    """Per-round results of both suites; every ratio is the median of per-round ratios."""

    def __init__(self, *results: dict[str, list[Any]]) -> None:
        self.r: dict[str, list[Any]] = {}
        for res in results:
            self.r.update(res)

    def has(self, *keys: str) -> bool:
        return all(k in self.r and self.r[k] for k in keys)

    def med(self, key: str) -> float:
        return statistics.median(self.r[key])

    def per_round(self, fn, *keys: str) -> list[float]:
        return [fn(*vals) for vals in zip(*(self.r[k] for k in keys))]

    def ratio(self, num: str, den: str) -> tuple[float, str]:
        rs = self.per_round(lambda a, b: a / b, num, den)
        return statistics.median(rs), f"{min(rs):.2f}–{max(rs):.2f}"

    def diff(self, num: str, den: str, scale: float = 1.0) -> tuple[float, str]:
        ds = self.per_round(lambda a, b: (a - b) * scale, num, den)
        return statistics.median(ds), f"{min(ds):+.2f}…{max(ds):+.2f}"


def _verdict(ok: bool, margin: str) -> str:
    return f"**pass** ({margin})" if ok else f"**MISS** ({margin})"


def _ms(us: float) -> str:
    return f"{us / 1000:.2f} ms"


def target_rows(s: R, notes: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []

    def ratio_row(t: str, label: str, num: str, den: str, show, limit: float, higher: bool, den_label: str = "") -> None:
        if not s.has(num, den):
            return
        r, rng = s.ratio(num, den)
        ok = r >= limit if higher else r <= limit
        rows.append((t, label, show(s.med(num)), show(s.med(den)) + den_label, f"{r:.2f}× ({rng})",
                     ("≥ " if higher else "≤ ") + f"{limit:g}×", _verdict(ok, f"{r / limit:.2f}× the limit")))

    def diff_row(t: str, label: str, num: str, den: str, show, limit_ms: float, scale: float = 1e-3,
                 per: float = 1.0, unit: str = "ms") -> None:
        if not s.has(num, den):
            return
        d, rng = s.diff(num, den, scale / per)
        rows.append((t, label, show(s.med(num)), show(s.med(den)), f"{d:+.3f} {unit} ({rng})",
                     f"≤ +{limit_ms:g} {unit}", _verdict(d <= limit_ms, f"{d / limit_ms:.2f}× the limit")))

    us = lambda v: f"{v:,.0f} µs"  # noqa: E731
    ms = lambda v: f"{v:,.2f} ms"  # noqa: E731
    rate = lambda v: f"{v:,.0f}/s"  # noqa: E731
    sec = lambda v: f"{v:.2f} s"  # noqa: E731
    ratio_row("T1", "no-op request p50 (unknown method)", "ping.chatd.p50", "ping.baseline.p50", us, 1.5, False)
    ratio_row("T1", "no-op request p99", "ping.chatd.p99", "ping.baseline.p99", us, 2.0, False)
    ratio_row("T1", "64 in flight, one connection", "pipe.chatd", "pipe.baseline", rate, 0.5, True)
    diff_row("T2", "one turn p50 (5 chunks): chatd − direct", "t2.chatd.p50", "t2.direct.p50", _ms, 1.0)
    ratio_row("T2", "one turn p50, ratio", "t2.chatd.p50", "t2.direct.p50", _ms, 2.5, False)
    diff_row("T2", "one turn p99: chatd − direct", "t2.chatd.p99", "t2.direct.p99", _ms, 3.0)
    diff_row("T3", "500-chunk stream: extra per forwarded delta", "t3.chatd.p50", "t3.direct.p50", _ms, 15.0,
             scale=1.0, per=500, unit="µs")
    diff_row("T3", "time to first delta: chatd − direct", "t3.chatd.first", "t3.direct.first", _ms, 1.0)
    if s.has("t4.chatd.wall"):
        lost = 20 * 1000 * len(s.r["t4.chatd.deltas"]) - sum(s.r["t4.chatd.deltas"])
        errs = sum(s.r["t4.chatd.errors"])
        rows.append(("T4", "1,000 streams × 20 deltas, 8 connections: lost deltas / errors (all rounds)",
                     f"{lost} / {errs}", "0 / 0", "", "0 / 0", _verdict(lost == 0 and errs == 0, "exact")))
    ratio_row("T4", "wall vs direct (both over chatd's HTTP client)", "t4.chatd.wall", "t4.direct.wall", sec, 1.25,
              False)
    if s.has("t4.chatd.wall"):
        w = s.med("t4.chatd.wall")
        rows.append(("T4", "wall vs ideal (2.0 s)", sec(w), "2.00 s", f"{w / 2:.2f}×", "≤ 1.75×",
                     _verdict(w / 2 <= 1.75, f"{w / 2 / 1.75:.2f}× the limit")))
    if s.has("t4.chatd.cpu_us_per_delta"):
        v = s.med("t4.chatd.cpu_us_per_delta")
        rows.append(("T4", "daemon CPU per delta", f"{v:.0f} µs", "", "", "≤ 150 µs",
                     _verdict(v <= 150, f"{v / 150:.2f}× the limit")))
    ratio_row("T5", "100 concurrent turns (chat/send, 8 connections) vs direct", "t5.chatd.rate", "t5.direct.rate",
              rate, 0.4, True)
    ratio_row("T5", "chat/batch vs lm-deluge batch (both 100 in flight)", "t5.batch.rate", "t5.lmdeluge.rate", rate,
              1.0, True, " (lm-deluge)")
    ratio_row("T5", "chat/batch vs litellm.acompletion (100 in flight)", "t5.batch.rate", "t5.litellm.rate", rate,
              10.0, True, " (litellm)")
    ratio_row("T5", "100 concurrent chat/send vs litellm.acompletion", "t5.chatd.rate", "t5.litellm.rate", rate,
              10.0, True, " (litellm)")
    if s.has("turn.socket.10000", "turn.socket.10"):
        d, rng = s.diff("turn.socket.10000", "turn.socket.10", 1e-3)
        rows.append(("T6", "turn (echo) at 10,000 messages − at 10", us(s.med("turn.socket.10000")),
                     us(s.med("turn.socket.10")) + " (at 10)", f"{d:+.3f} ms ({rng})", "≤ +1 ms",
                     _verdict(d <= 1.0, f"{d:.2f}× the limit")))
    ratio_row("T7", "commit per turn, synchronous=NORMAL, vs write+fsync", "persist.commit_normal_us",
              "persist.fsync_us", us, 0.25, False)
    ratio_row("T8", "`chatd call chat/send` one-shot vs `python -I -S -c pass`", "t8.chatd", "t8.python", ms, 3.0,
              False)
    ratio_row("T8", "`llm` CLI one-shot vs `chatd call` (≥ 20× faster)", "t8.llm", "t8.chatd", ms, 20.0, True)
    heavy = notes.get("t8.imports", {}).get("heavy")
    if heavy is not None:
        bad = [m for m in heavy if m in ("httpx", "pygls", "lsprotocol", "aiohttp")]
        rows.append(("T8", "`chatd call` imports (httpx/pygls must not load)", ", ".join(heavy) or "none of them",
                     "", "", "no httpx, pygls", _verdict(not bad, "asyncio loaded" if "asyncio" in heavy else "clean")))
    if s.has("start.chatd.first_ms"):
        v = s.med("start.chatd.first_ms")
        rows.append(("T8", "daemon spawn → first answer", f"{v:.0f} ms", "", "", "≤ 1000 ms",
                     _verdict(v <= 1000, f"{v / 1000:.2f}× the limit")))
    if s.has("start.chatd.rss_mb"):
        v = s.med("start.chatd.rss_mb")
        rows.append(("T8", "idle RSS", f"{v:.1f} MB", "", "", "≤ 60 MB", _verdict(v <= 60, f"{v / 60:.2f}× the limit")))
    for kind, label in (("429", "429 + Retry-After"), ("500", "500"), ("drop", "stream dropped mid-way")):
        diff_row("T9", f"error reaches the client, {label}: chatd − direct", f"t9.chatd.{kind}", f"t9.direct.{kind}",
                 _ms, 1.0)
    leak = notes.get("t9.leak")
    if leak:
        ok = leak["fds_after"] <= leak["fds_before"] and leak["open_after"] <= leak["open_before"]
        rows.append(("T9", f"after {leak['failures']:,} injected failures: daemon fds / fake's open connections",
                     f"{leak['fds_after']} / {leak['open_after']}", f"{leak['fds_before']} / {leak['open_before']} before",
                     "", "no growth", _verdict(ok, "no leak" if ok else "leak")))
    return rows


def peer_rows(s: R) -> list[tuple[str, ...]]:
    rows = []
    for name, label in [("chatd", "**chatd** (through the daemon)"), ("direct", "direct (chatd's provider, same client)"),
                        *PEER_NAMES.items()]:
        t2 = _ms(s.med(f"t2.{name}.p50")) if s.has(f"t2.{name}.p50") else "–"
        t3 = f"{s.med(f't3.{name}.p50') / 1000:.1f} ms ({s.med(f't3.{name}.p50') / 500:.1f} µs/delta)" \
            if s.has(f"t3.{name}.p50") else "– (no streaming API)"
        rkey = "t5.batch.rate" if name == "chatd" else f"t5.{name}.rate"
        t5 = f"{s.med(rkey):,.0f}/s" if s.has(rkey) else "–"
        if name == "chatd" and s.has("t5.chatd.rate"):
            t5 += f" (chat/send: {s.med('t5.chatd.rate'):,.0f}/s)"
        t9 = _ms(s.med(f"t9.{name}.500")) if s.has(f"t9.{name}.500") else "–"
        rows.append((label, t2, t3, t5, t9))
    return rows


def headline_rows(s: R) -> list[tuple[str, ...]]:
    rows = []

    def add(label: str, num: str, den: str, limit: float) -> None:
        if s.has(num, den):
            r, rng = s.ratio(num, den)
            rows.append((label, f"{r:.1f}× ({rng})", f"≥ {limit:g}×", _verdict(r >= limit, f"{r / limit:.2f}× the goal")))

    add("turn latency p50: litellm / chatd", "t2.litellm.p50", "t2.chatd.p50", 4)
    add("streaming cost (500-chunk stream): litellm / chatd", "t3.litellm.p50", "t3.chatd.p50", 10)
    add("concurrent throughput: chatd chat/batch / litellm", "t5.batch.rate", "t5.litellm.rate", 10)
    add("CLI one-shot wall: llm / chatd call", "t8.llm", "t8.chatd", 20)
    add("batch throughput: chatd / lm-deluge", "t5.batch.rate", "t5.lmdeluge.rate", 1)
    return rows


def plot(s: R, path: str, rounds: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(17, 9.5))
    names = ["chatd", "direct", *PEER_NAMES]
    labels = {"chatd": "chatd", "direct": "direct", **{k: v.split(" ")[0] for k, v in PEER_NAMES.items()}}
    colors = {"chatd": "#2b7bba", "direct": "#7f7f7f", "openai": "#6a3d9a", "litellm": "#e31a1c",
              "lmdeluge": "#33a02c", "llm": "#ff7f00"}

    xs = [(labels[n], s.med(f"t2.{n}.p50") / 1000, colors[n]) for n in names if s.has(f"t2.{n}.p50")]
    b = axes[0][0].bar([x[0] for x in xs], [x[1] for x in xs], color=[x[2] for x in xs])
    axes[0][0].bar_label(b, labels=[f"{x[1]:.2f}" for x in xs], fontsize=9)
    axes[0][0].set_title("T2: one streamed turn (5 chunks), p50 — lower is better", fontsize=11)
    axes[0][0].set_ylabel("ms")
    axes[0][0].tick_params(axis="x", labelsize=9, rotation=15)

    ax = axes[0][1]
    xs = [(labels[n], s.med(f"t3.{n}.p50") / 500, colors[n]) for n in names if s.has(f"t3.{n}.p50")]
    b = ax.bar([x[0] for x in xs], [x[1] for x in xs], color=[x[2] for x in xs])
    ax.bar_label(b, labels=[f"{x[1]:.1f}" for x in xs], fontsize=9)
    ax.set_title("T3: 500-chunk stream, wall per delta — lower is better", fontsize=11)
    ax.set_ylabel("µs per delta")
    ax.tick_params(axis="x", labelsize=9, rotation=15)

    ax = axes[0][2]
    keys = [("chatd batch", "t5.batch.rate", "#2b7bba"), ("chatd send", "t5.chatd.rate", "#6baed6"),
            ("direct", "t5.direct.rate", "#7f7f7f")] + [(labels[n], f"t5.{n}.rate", colors[n]) for n in PEER_NAMES]
    xs = [(lab, s.med(k), c) for lab, k, c in keys if s.has(k)]
    b = ax.bar([x[0] for x in xs], [x[1] for x in xs], color=[x[2] for x in xs])
    ax.bar_label(b, labels=[f"{x[1]:,.0f}" for x in xs], fontsize=9)
    ax.set_yscale("log")
    ax.set_title("T5: turns per second, 100 in flight — higher is better", fontsize=11)
    ax.set_ylabel("turns/s (log)")
    ax.tick_params(axis="x", labelsize=9, rotation=15)

    ax = axes[1][0]
    keys = [("chatd", "t4.chatd.wall", "#2b7bba"), ("direct", "t4.direct.wall", "#7f7f7f")]
    xs = [(lab, s.med(k), c) for lab, k, c in keys if s.has(k)]
    b = ax.bar([x[0] for x in xs], [x[1] for x in xs], color=[x[2] for x in xs])
    ax.bar_label(b, labels=[f"{x[1]:.1f} s" for x in xs], fontsize=9)
    ax.axhline(2.0, color="k", ls=":", lw=1)
    ax.axhline(3.5, color="r", ls="--", lw=1)
    ax.text(len(xs) - 0.5, 2.0, "ideal 2.0 s", ha="right", va="bottom", fontsize=8)
    ax.text(len(xs) - 0.5, 3.5, "target 1.75× ideal", ha="right", va="bottom", fontsize=8, color="r")
    ax.set_title("T4: 1,000 concurrent streams (20 deltas × 100 ms), wall", fontsize=11)
    ax.set_ylabel("s")

    ax = axes[1][1]
    keys = [("python -I -S", "t8.python", "#7f7f7f"), ("chatd call", "t8.chatd", "#2b7bba"),
            ("llm CLI", "t8.llm", "#ff7f00")]
    xs = [(lab, s.med(k), c) for lab, k, c in keys if s.has(k)]
    b = ax.bar([x[0] for x in xs], [x[1] for x in xs], color=[x[2] for x in xs])
    ax.bar_label(b, labels=[f"{x[1]:,.0f} ms" for x in xs], fontsize=9)
    ax.set_yscale("log")
    ax.set_title("T8: one-shot CLI turn, wall (daemon running) — lower is better", fontsize=11)
    ax.set_ylabel("ms (log)")

    ax = axes[1][2]
    kinds = [("429", "429"), ("500", "500"), ("drop", "dropped")]
    import numpy as np

    x = np.arange(len(kinds))
    for off, (who, color) in ((-0.2, ("chatd", "#2b7bba")), (0.2, ("direct", "#7f7f7f"))):
        vals = [s.med(f"t9.{who}.{k}") / 1000 if s.has(f"t9.{who}.{k}") else 0 for k, _ in kinds]
        b = ax.bar(x + off, vals, 0.4, label=who, color=color)
        ax.bar_label(b, labels=[f"{v:.2f}" for v in vals], fontsize=9)
    ax.set_xticks(x, [lab for _, lab in kinds])
    ax.set_title("T9: injected failure → error seen by the client", fontsize=11)
    ax.set_ylabel("ms")
    ax.legend(fontsize=9)

    fig.suptitle(f"chatd vs direct and peers on one fake OpenAI server: medians of {rounds} interleaved rounds",
                 fontsize=13)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def section(bench: Any, daemon_results: dict[str, list[Any]] | None, rel_img: str) -> str:
    s = R(daemon_results or {}, bench.results)
    notes = bench.notes
    codes = {k: notes.get(f"t9.chatd.{k}.codes") for k in ("429", "500", "drop")}
    return f"""## Targets of issue #10 (T1–T9), each against its baseline in the same run

T1, T6, T7 and the daemon's start-up and memory come from the daemon suite below; the rest from the turn
suite ({bench.rounds} interleaved rounds). Every client talks to one fake OpenAI server (`bench/fake_openai.py`).
Times are medians over rounds; ratios and differences are medians of per-round values (range in brackets).

{table(("#", "workload", "chatd", "baseline", "ratio / difference", "target", "result"), target_rows(s, notes))}

![chatd vs peers]({rel_img})

## Peers on the same fake, same workload

{table(("", "one turn, 5 chunks (T2 p50)", "500-chunk stream (T3 p50)", "turns/s at 100 in flight (T5)",
        "HTTP 500 → error seen (T9)"), peer_rows(s))}

The issue's one line, measured:

{table(("goal", "ratio (range)", "goal", "result"), headline_rows(s))}

Workload details: T2 is {bench.legs} legs per round of {bench.n_turns} sequential `chat/send`s, each leg on a fresh
conversation (history grows by two messages a turn), alternating with {bench.legs} legs of the direct client and the
samples pooled per side; each reply 5 chunks; T3 the same with {bench.n_stream} turns of 500 chunks a leg (the
per-delta figure is the wall difference divided by 500; peers' column is their whole wall per delta);
T4 {bench.n_wide:,} `chat/send`s at once on 8 connections, each reply 20 chunks 100 ms apart, every `chat/delta`
counted; T5 {bench.n_conc:,} turns at 100 in flight, and `chat/batch` of {bench.n_batch:,} prompts with
`maxConcurrent` 100 (lm-deluge: the same prompts through `process_prompts_async` with
`max_concurrent_requests=100`, its rate limits raised out of the way; litellm and llm: {bench.n_slow_peer}
streamed `acompletion`s / async prompts at 100 in flight; openai SDK {bench.n_conc:,}); T8 `chatd call chat/send`
as a new process with the daemon running ({bench.n_cli} per round; the installed `chatd` script, finding the
socket through `CHATD_HOME`: through a private `$XDG_RUNTIME_DIR` it imports the same modules,
tests/terminal/test_cli_args.py) vs `python -I -S -c pass` and
`llm -m MODEL PROMPT` (its default logging to SQLite on); T9 {bench.n_fail} failures per kind per round, one try
(`max-attempts = 1`, no cooldown) so the first error is the client's; JSON-RPC codes seen: {codes}.
The daemon's config.toml raises `[routing] max-concurrent` to 2,000 (default 64) and `[limits]
max-turns-per-connection` to 1,000 (default 16: T4's 125 turns per connection are otherwise refused with -32005).
After the turn suite the daemon's RSS was {notes.get('rss_after_mb', 0):.0f} MB.
"""
