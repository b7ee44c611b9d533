"""Property tests: whatever text goes through the quoting filters comes out as exactly the
same words when bash (or a shlex split, as Batch does) reads it back."""

from __future__ import annotations

import shlex
import subprocess

from hypothesis import given, settings
from hypothesis import strategies as st

from bootstrap import start_task_command, wrap_command
from bootstrap.render import quote_join

# any text bash can hold in an argument: everything but NUL
TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)))


@given(st.lists(TEXT, min_size=1, max_size=6))
def test_quote_join_round_trips_through_shlex(words: list[str]) -> None:
    assert shlex.split(quote_join(words)) == words


@settings(max_examples=30, deadline=None)
@given(st.lists(TEXT, min_size=1, max_size=4))
def test_quote_join_round_trips_through_bash(words: list[str]) -> None:
    script = "printf '%s\\0' " + quote_join(words)
    out = subprocess.run(["bash", "-c", script], capture_output=True, check=True).stdout
    assert out.decode("utf-8", "surrogateescape").split("\0")[:-1] == words


@given(TEXT.filter(lambda s: s.strip() != ""))
def test_wrap_command_is_always_three_words_ending_in_the_command(command: str) -> None:
    argv = shlex.split(wrap_command(command))
    assert argv[:2] == ["/bin/bash", "-c"] and len(argv) == 3
    assert argv[2].endswith("\n" + command)


@given(TEXT.filter(lambda s: s.strip() != ""))
def test_wrap_command_is_exactly_shlex_quote_of_the_prelude_and_command(command: str) -> None:
    # The prelude is quoted once ahead of time; the result must not drift from shlex.quote.
    from bootstrap.command import PRELUDE

    assert wrap_command(command) == "/bin/bash -c " + shlex.quote(PRELUDE + command)


def test_start_task_command_runs_the_shipped_file() -> None:
    assert shlex.split(start_task_command()) == ["/bin/bash", "batchlaunch-start.sh"]
