"""Values that reach the script verbatim (hooks, environment, task commands) stay inert:
proved by executing the script and checking the side effect did not happen."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from bootstrap import NoRuntime, PythonRuntime, render_start_task, wrap_command
from tests.bootstrap.sandbox import Node


def _hostile(canary: Path) -> list[str]:
    return [
        f"x; touch {canary}",
        f"$(touch {canary})",
        f"`touch {canary}`",
        f"' ; touch {canary}; echo '",
        f'" ; touch {canary}; echo "',
        f"a\ntouch {canary}",
        f"${{IFS}}$(touch${{IFS}}{canary})",
    ]


def test_hostile_hook_arguments_and_environment_values_are_inert(
    node: Node, tmp_path: Path
) -> None:
    canary = tmp_path / "pwned"
    values = _hostile(canary)
    spec = NoRuntime(
        pre_install=[["printf", "[%s]\\n", *values]],
        post_install=[shlex.join(["printf", "<%s>\\n", values[0]])],
        environment={f"HOSTILE_{i}": v for i, v in enumerate(values)},
    )
    run = node.start_task(render_start_task(spec))
    assert run.returncode == 0, run.stderr
    assert not canary.exists(), "a hostile value was executed by the start task"
    for value in values:  # each reached the hook as exactly one argument
        assert f"[{value}]" in run.stdout
    assert f"<{values[0]}>" in run.stdout

    probe = ";".join(f'printf "%s\\0" "$HOSTILE_{i}"' for i in range(len(values)))
    task = node.task(probe)
    assert task.returncode == 0, task.stderr
    assert task.stdout.split("\0")[:-1] == values
    assert not canary.exists(), "a hostile value was executed when a task sourced env.sh"


def test_hostile_requirement_is_rejected_before_any_script_exists() -> None:
    with pytest.raises(ValueError, match="not a PEP 508 requirement"):
        PythonRuntime(packages=["numpy; touch /tmp/x"])


def test_wrap_command_is_three_words_and_sources_env(node: Node, tmp_path: Path) -> None:
    command = 'echo "it\'s $GREETING" > out.txt; cat out.txt'
    line = wrap_command(command)
    argv = shlex.split(line)
    assert argv[:2] == ["/bin/bash", "-c"] and len(argv) == 3 and argv[2].endswith(command)

    # before the start task ran: no env.sh, the command still runs
    first = node.task(command)
    assert first.returncode == 0 and first.stdout == "it's \n", first.stderr

    run = node.start_task(render_start_task(NoRuntime(environment={"GREETING": "hello 'x'"})))
    assert run.returncode == 0, run.stderr
    second = node.task(command)
    assert second.stdout == "it's hello 'x'\n", second.stderr
    exit_code = node.task("exit 7")
    assert exit_code.returncode == 7


def test_failed_hook_names_its_step(node: Node) -> None:
    spec = NoRuntime(post_install=[["false"]])
    run = node.start_task(render_start_task(spec))
    assert run.returncode == 1
    assert "batchlaunch: step 'post_install hook 1' failed (command: false; exit 1)" in run.stderr
    assert not (node.shared / "batchlaunch" / "env.sh").exists()
