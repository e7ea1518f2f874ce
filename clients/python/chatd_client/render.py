"""Markdown to ANSI for the terminal: headings, emphasis, inline code, fenced code, lists, quotes, rules, links.

Line by line and stateful (a fenced code block spans lines), so a streamed reply is rendered as each of
its lines completes: `LiveText` shows the raw text as it arrives and replaces each finished line with its
rendering; `Screen` shares the terminal between a reply and the user's prompt. Model text is untrusted: `sanitize` drops control characters (escape sequences included)
before anything reaches the terminal. With colour off the renderer returns lines as written.
"""

from __future__ import annotations

import re
import shutil
import threading
import unicodedata
from typing import Any, Callable, TextIO

RESET = "\x1b[0m"
BOLD = "\x1b[1m"
DIM = "\x1b[2m"
ITALIC = "\x1b[3m"
UNDERLINE = "\x1b[4m"
STRIKE = "\x1b[9m"
HEADING = "\x1b[1;36m"
CODE = "\x1b[33m"

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x9b]")
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^`\s]*)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_RULE = re.compile(r"^\s*([-*_])(\s*\1){2,}\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(\[[ xX]\]\s+)?(.*)$")
_NUMBERED = re.compile(r"^(\s*)(\d{1,9})([.)])\s+(.*)$")
_QUOTE = re.compile(r"^\s*>\s?(.*)$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_INLINE = [
    (re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__"), BOLD),
    (re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])|(?<![\w_])_(?=[^\s_])(.+?)(?<=[^\s_])_(?![\w_])"),
     ITALIC),
    (re.compile(r"~~(?=\S)(.+?)(?<=\S)~~"), STRIKE),
]
_LINK = re.compile(r"\[([^\]\n]+)\]\(([^)\s]+)\)")


def sanitize(text: str) -> str:
    """Text safe to write to a terminal: tabs as spaces, no control characters (so no escape sequences)."""
    return _CONTROL.sub("", text.replace("\t", "    ").replace("\r\n", "\n"))


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def cells(text: str) -> int:
    """Terminal columns `text` takes once its escape sequences are removed (wide characters count two)."""
    width = 0
    for ch in strip_ansi(text):
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


class Markdown:
    """Renders markdown one line at a time; remembers whether it is inside a fenced code block."""

    def __init__(self, color: bool = True) -> None:
        self.color = color
        self.fence: str | None = None  # the open fence's marker, while inside a code block

    def reset(self) -> None:
        self.fence = None

    def render(self, text: str) -> str:
        return "\n".join(self.line(line) for line in text.split("\n"))

    def line(self, raw: str) -> str:
        if not self.color:
            return raw
        fence = _FENCE.match(raw)
        if self.fence is not None:
            if fence and fence.group(2)[0] == self.fence[0] and len(fence.group(2)) >= len(self.fence) \
                    and not fence.group(3):
                self.fence = None
                return f"{DIM}╰─{RESET}"
            return f"{DIM}│{RESET} {CODE}{raw}{RESET}"
        if fence:
            self.fence = fence.group(2)
            return f"{DIM}╭─ {fence.group(3) or 'code'}{RESET}"
        if m := _HEADING.match(raw):
            style = HEADING + (UNDERLINE if len(m.group(1)) == 1 else "")
            return f"{style}{self.inline(m.group(2), style)}{RESET}"
        if _RULE.match(raw):
            return f"{DIM}{'─' * 40}{RESET}"
        if m := _BULLET.match(raw):
            box = ("☑ " if m.group(2).strip()[1] in "xX" else "☐ ") if m.group(2) else ""
            return f"{m.group(1)}• {box}{self.inline(m.group(3))}"
        if m := _NUMBERED.match(raw):
            return f"{m.group(1)}{BOLD}{m.group(2)}{m.group(3)}{RESET} {self.inline(m.group(4))}"
        if m := _QUOTE.match(raw):
            return f"{DIM}│{RESET} {ITALIC}{self.inline(m.group(1), ITALIC)}{RESET}"
        return self.inline(raw)

    def inline(self, text: str, base: str = "") -> str:
        """Emphasis, strike-through, links and code spans; `base` is the style to return to after each."""
        out, pos = [], 0
        for m in _CODE_SPAN.finditer(text):
            out.append(self._spans(text[pos:m.start()], base))
            out.append(f"{CODE}{m.group(2).strip() or m.group(2)}{RESET}{base}")
            pos = m.end()
        out.append(self._spans(text[pos:], base))
        return "".join(out)

    @staticmethod
    def _spans(text: str, base: str) -> str:
        for pattern, style in _INLINE:
            text = pattern.sub(lambda m, s=style: f"{s}{m.group(1) or m.group(2)}{RESET}{base}", text)
        return _LINK.sub(lambda m: f"{UNDERLINE}{m.group(1)}{RESET}{base} {DIM}({m.group(2)}){RESET}{base}", text)


class LiveText:
    """A streamed reply on a terminal: the unfinished line raw as it arrives, each finished line erased and
    rewritten rendered (also when it wrapped over several rows).

    While `held()` is true (the user is at the prompt) nothing partial is written: finished lines go to
    `above` (which prints them above the prompt) and the unfinished one waits. With `markdown=None` (output
    is not a terminal) the text is written exactly as it arrives.
    """

    def __init__(self, out: TextIO, markdown: Markdown | None, columns: Callable[[], int],
                 held: Callable[[], bool] = lambda: False, above: Callable[[str], None] | None = None) -> None:
        self.out = out
        self.markdown = markdown
        self.columns = columns
        self.held = held
        self.above = above
        self.prefix = ""  # written before the first line (e.g. "Assistant (echo): "), rewritten with it
        self.partial = ""  # the unfinished line
        self.shown = False  # prefix + partial are on screen, raw
        self.active = False

    def start(self, prefix: str = "") -> None:
        self.prefix, self.partial, self.shown, self.active = prefix, "", False, True
        if self.markdown is None:
            self.out.write(prefix)
            return
        self.markdown.reset()
        self._show()

    def feed(self, text: str) -> None:
        if self.markdown is None:
            self.out.write(text)
            self.partial = text.rsplit("\n", 1)[1] if "\n" in text else self.partial + text
            return
        *lines, rest = sanitize(text).split("\n")
        for line in lines:
            self._line(self.partial + line)
        if lines or not self.shown:
            self.partial = rest if lines else self.partial + rest
            self._show()
        elif rest:
            self.partial += rest
            self.out.write(rest)

    def break_line(self) -> None:
        """Something else is about to be written (a notice, the prompt): end the raw line on screen."""
        if self.markdown is None:
            if self.partial or self.prefix:
                self.out.write("\n")
            self.prefix = self.partial = ""
        elif self.shown:
            self._line(self.partial)

    def finish(self) -> None:
        """End the reply: its last line rendered, the cursor at the start of a fresh line."""
        if self.markdown is not None and (self.partial or self.prefix):
            self._line(self.partial)
        self.break_line()
        self.active = False

    def _show(self) -> None:
        if not self.shown and (self.prefix or self.partial) and not self.held():
            self.out.write(self.prefix + self.partial)
            self.shown = True

    def _line(self, line: str) -> None:
        assert self.markdown is not None
        rendered = self.prefix + self.markdown.line(line)
        if self.shown:
            rows = max(1, -(-(cells(self.prefix) + cells(self.partial)) // max(1, self.columns())))
            up = f"\x1b[{rows - 1}A" if rows > 1 else ""
            self.out.write(f"\r{up}\x1b[J{rendered}\n")
        elif self.held() and self.above is not None:
            self.above(rendered)
        else:
            self.out.write(rendered + "\n")
        self.prefix = self.partial = ""
        self.shown = False


class Screen:
    """All output, from both threads. While the prompt shows, whole lines are written above it and the
    prompt is redrawn with what the user has typed so far (readline's line buffer)."""

    def __init__(self, out: Any, interactive: bool, color: bool, prompt: str) -> None:
        self.out = out
        self.prompt = prompt
        self.interactive = interactive
        self.color = color
        self.lock = threading.RLock()
        self.at_prompt = False
        markdown = Markdown(color=color) if interactive or color else None
        self.live = LiveText(out, markdown, self.columns, held=lambda: self.at_prompt, above=self._above)
        self._redisplay = _forced_redisplay() if interactive else None

    @staticmethod
    def columns() -> int:
        return shutil.get_terminal_size((100, 24)).columns

    def style(self, text: str, code: str = DIM) -> str:
        return f"{code}{text}{RESET}" if self.color else text

    def line(self, text: str = "") -> None:
        with self.lock:
            self.live.break_line()
            if self.at_prompt:
                self._above(text)
            else:
                self.out.write(text + "\n")
            self.out.flush()

    def flush(self) -> None:
        with self.lock:
            self.out.flush()

    def prompt_shown(self) -> None:
        """readline's pre-input hook: the prompt is on screen now."""
        with self.lock:
            self.live.break_line()
            self.at_prompt = self.interactive

    def _above(self, text: str) -> None:
        if not self.interactive:
            self.out.write(text + "\n")
            return
        import readline

        typed = self.prompt + readline.get_line_buffer()
        rows = max(1, -(-cells(typed) // max(1, self.columns())))
        up = f"\x1b[{rows - 1}A" if rows > 1 else ""
        self.out.write(f"\r{up}\x1b[J{text}\n")
        self.out.flush()
        if self._redisplay is not None:
            self._redisplay()
        else:
            self.out.write(typed)
        self.out.flush()


def _forced_redisplay() -> Callable[[], Any] | None:
    """GNU readline's rl_forced_update_display (redraws prompt, text and cursor), which Python does not wrap."""
    try:
        import ctypes
        import readline

        return ctypes.CDLL(readline.__file__).rl_forced_update_display  # type: ignore[no-any-return]
    except (ImportError, OSError, AttributeError):
        return None
