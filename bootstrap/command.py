"""Task command lines: run the user's command under bash with the runtime's env.sh sourced.

Batch runs a Linux task's command line without a shell, so every task the launcher creates
goes through `wrap_command`, which returns ``/bin/bash -c '<script>'`` quoted so that a
shlex split (what Batch and the emulator do) yields exactly three words.
"""

from __future__ import annotations

# Relative to $AZ_BATCH_NODE_SHARED_DIR; written by the start task (see render.py).
ENV_FILE = "batchlaunch/env.sh"
# The rendered script's name as a start-task resource file (in the start task's working dir).
START_TASK_FILE = "batchlaunch-start.sh"


def start_task_command() -> str:
    """The start task's command line: run the shipped script with bash (no exec bit needed).

    The start task should run elevated (admin auto-user) so Debian packages can be installed.
    """
    return f"/bin/bash {START_TASK_FILE}"


#: What every task runs before its command: source the runtime's env file when it exists.
PRELUDE = (
    f'BL_ENV="${{AZ_BATCH_NODE_SHARED_DIR:-}}/{ENV_FILE}"\n'
    'if [ -f "$BL_ENV" ]; then . "$BL_ENV"; fi\n'
    "unset BL_ENV\n"
)
# shlex.quote of PRELUDE + command is always the single-quoted form (the prelude has spaces),
# so the prelude's part is quoted once here rather than rescanned for every task.
_QUOTED_PRELUDE = "/bin/bash -c '" + PRELUDE.replace("'", "'\"'\"'")


def wrap_command(command: str) -> str:
    """The Batch command line for `command` (a bash command string) with env.sh sourced:
    ``/bin/bash -c`` and ``shlex.quote(PRELUDE + command)``."""
    if "\x00" in command:
        raise ValueError("a task command must not contain NUL bytes")
    if not command.strip():
        raise ValueError("a task command must not be empty")
    return _QUOTED_PRELUDE + command.replace("'", "'\"'\"'") + "'"
