"""The replay's progress output: a redrawn bar on a terminal, plain periodic lines in a log."""

from __future__ import annotations

import io

from streams.replay.runner import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_bar_is_redrawn_in_place_and_ends_with_a_newline():
    screen = Terminal()
    progress = Progress(100, screen, interval=0)
    progress.update(40)
    progress.update(100, final=True)
    text = screen.getvalue()
    assert text.startswith("\r[") and text.count("\r") == 2
    first, last = text[1:].split("\r")
    assert "40/100 events" in first and "100/100 events" in last
    assert text.endswith("\n") and "\n" not in text[:-1]


def test_in_a_log_each_update_is_a_plain_line_and_updates_are_spaced():
    log = io.StringIO()
    progress = Progress(100, log)  # not a terminal: a line every 5 seconds at most, and the final one
    progress.update(10)
    progress.update(20)
    progress.update(100, final=True)
    lines = log.getvalue().splitlines()
    assert len(lines) == 2
    assert all(line.startswith("replay: [") and "\r" not in line for line in lines)
    assert "100/100 events" in lines[-1] and "ETA 0:00" in lines[-1]
