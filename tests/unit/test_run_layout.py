"""Where a run's outputs land in storage, and how parent outputs reach a dependent task."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.errors import UserError
from launcher.params import load_params
from launcher.run import output_blob_path


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("result.csv", "P/result.csv"),
        ("./out/v.txt", "P/out/v.txt"),
        ("out/*.txt", "P/out"),
        ("out/sub/**/*.h5", "P/out/sub"),
        ("**/*.csv", "P"),
        ("*.log", "P"),
        ("data/run-?/x.bin", "P/data"),
    ],
)
def test_output_blob_path_keeps_the_working_dir_layout(pattern: str, expected: str) -> None:
    assert output_blob_path("P", pattern) == expected


def _params(tmp_path: Path, task_extra: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(
        '[[tasks]]\nid = "a"\ncommand = "true"\noutputs = ["x.txt"]\n'
        f'[[tasks]]\nid = "b"\ncommand = "true"\n{task_extra}\n'
    )
    return path


def test_parent_outputs_needs_depends_on(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"parent_outputs: needs depends_on"):
        load_params(_params(tmp_path, 'parent_outputs = "in"'))


def test_parent_outputs_must_be_one_directory_name(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"parent_outputs.*one directory name"):
        load_params(_params(tmp_path, 'depends_on = ["a"]\nparent_outputs = "../x"'))


def test_parent_outputs_reaches_the_task_instance(tmp_path: Path) -> None:
    params = load_params(_params(tmp_path, 'depends_on = ["a"]\nparent_outputs = "in"'))
    reduce = params.task_instances()[1]
    assert reduce.parent_outputs == "in" and reduce.depends_on == ["a"]


def test_sweep_placeholders_in_outputs_become_values(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        '[[tasks]]\nid = "s"\ncommand = "sim {n} {tag}"\n'
        'outputs = ["res-{n}.csv", "{tag}/*.h5"]\nsweep = { n = [1, 2], tag = ["a b"] }\n'
    )
    tasks = load_params(path).task_instances()
    assert [t.outputs for t in tasks] == [["res-1.csv", "a b/*.h5"], ["res-2.csv", "a b/*.h5"]]
    assert tasks[0].command == "sim 1 'a b'"  # the command, unlike outputs, is shell-quoted


def test_the_same_start_task_failure_on_several_nodes_is_printed_once() -> None:
    from launcher.client import NodeFailure
    from launcher.run import node_failure_lines

    step = "batchlaunch: step 'install python packages' failed (package: nope; exit 1)"

    def node(node_id: str, error: str = "error: No solution found") -> NodeFailure:
        tail = f"{step}\nUsing Python 3.11 environment at: /nodes/p/{node_id}/shared\n{error}"
        return NodeFailure(node_id, "starttaskfailed", 1, "", step, tail)

    lines = node_failure_lines([node("tvm-1"), node("tvm-2"), node("tvm-3", "error: disk full")])
    assert lines[0] == "2 node(s) starttaskfailed (start task exit code 1): tvm-1, tvm-2"
    assert lines[1] == f"    {step}"
    assert lines[2:4] == [
        "    | Using Python 3.11 environment at: /nodes/p/tvm-1/shared",
        "    | error: No solution found",
    ]
    assert lines[4] == "1 node(s) starttaskfailed (start task exit code 1): tvm-3"
    assert lines[-1] == "    | error: disk full"
    assert sum(line.startswith("    | error: No solution") for line in lines) == 1
