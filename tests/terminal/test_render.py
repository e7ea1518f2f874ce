"""Markdown to ANSI, line by line, and the live rewrite of a streamed line (no daemon needed)."""

from __future__ import annotations

import io

from chatd_client.render import BOLD, CODE, HEADING, ITALIC, RESET, UNDERLINE, LiveText, Markdown, cells, sanitize


def test_blocks_and_inline_styles():
    md = Markdown()
    assert md.line("# Title") == f"{HEADING}{UNDERLINE}Title{RESET}"
    assert md.line("## Sub **b**") == f"{HEADING}Sub {BOLD}b{RESET}{HEADING}{RESET}"
    assert md.line("plain **bold** and *it* and `x*y*`") == \
        f"plain {BOLD}bold{RESET} and {ITALIC}it{RESET} and {CODE}x*y*{RESET}"
    assert md.line("snake_case_name and 2*3*4") == "snake_case_name and 2*3*4"
    assert md.line("- item") == "• item" and md.line("  * nested") == "  • nested"
    assert md.line("- [x] done") == "• ☑ done"
    assert md.line("3. third") == f"{BOLD}3.{RESET} third"
    assert "(https://example.com)" in md.line("[site](https://example.com)")


def test_code_blocks_are_not_rendered_inside():
    md = Markdown()
    out = [md.line(line) for line in ["```python", "x = **y**  # *not* styled", "```", "**after**"]]
    assert "python" in out[0] and "x = **y**  # *not* styled" in out[1] and out[3] == f"{BOLD}after{RESET}"
    assert md.fence is None


def test_colour_off_returns_the_text_as_written():
    md = Markdown(color=False)
    assert md.render("# T\n**b**\n```\ncode\n```") == "# T\n**b**\n```\ncode\n```"


def test_model_text_cannot_send_escape_sequences():
    assert sanitize("a\x1b]0;title\x07b\x1b[2Jc\tz") == "a]0;titleb[2Jc    z"
    assert cells("\x1b[1mab\x1b[0m") == 2 and cells("日本") == 4


def test_a_streamed_line_is_shown_raw_then_rewritten_rendered_even_when_it_wrapped():
    out = io.StringIO()
    live = LiveText(out, Markdown(), columns=lambda: 10)
    live.start("A: ")
    live.feed("one **two** three")  # 3 + 17 cells: two rows at 10 columns
    live.feed(" four\nnext")
    live.finish()
    # Raw as it came; at the newline: back to the line's first row, clear, the rendered line (" four" never
    # shows raw: the line was complete when it arrived); then "next" raw, rewritten at the end.
    assert out.getvalue() == (f"A: one **two** three\r\x1b[1A\x1b[JA: one {BOLD}two{RESET} three four\n"
                              "next\r\x1b[Jnext\n")


def test_while_the_prompt_shows_only_whole_lines_go_above_it():
    out, above, held = io.StringIO(), [], [True]
    live = LiveText(out, Markdown(), columns=lambda: 80, held=lambda: held[0], above=above.append)
    live.start("A: ")
    live.feed("first **line**\nsecond")
    assert above == [f"A: first {BOLD}line{RESET}"] and out.getvalue() == ""
    held[0] = False  # the user sent a line: the rest streams normally
    live.feed(" half")
    live.finish()
    assert out.getvalue() == "second half\r\x1b[Jsecond half\n"


def test_plain_output_is_exactly_the_stream():
    out = io.StringIO()
    live = LiveText(out, None, columns=lambda: 80)
    live.start("A: ")
    for piece in ("**x**", " y\n", "z"):
        live.feed(piece)
    live.finish()
    assert out.getvalue() == "A: **x** y\nz\n"
