"""Mistakes that would only show up on the pool are refused when the file is loaded:
dependency cycles, a misspelled sweep placeholder, a broken or ignored autoscale formula."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.errors import UserError
from launcher.params import load_params


def _load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return load_params(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[tasks]]\nid = "a"\ncommand = "true"\ndepends_on = ["b"]\n'
            '[[tasks]]\nid = "b"\ncommand = "true"\ndepends_on = ["a"]\n',
            r"\[\[tasks\]\] #1 depends_on: dependency cycle a -> b -> a",
        ),
        (
            '[[tasks]]\nid = "a"\ncommand = "true"\ndepends_on = ["a"]\n',
            r"dependency cycle a -> a",
        ),
        (
            '[[tasks]]\nid = "s"\ncommand = "true"\nsweep = { n = [1, 2] }\n'
            '[[tasks]]\nid = "r"\ncommand = "true"\ndepends_on = ["s"]\n'
            '[[tasks]]\nid = "x"\ncommand = "true"\ndepends_on = ["r", "s-1"]\n'
            '[[tasks]]\nid = "s2"\ncommand = "true"\ndepends_on = ["x"]\n'
            '[[tasks]]\nid = "loop"\ncommand = "true"\ndepends_on = ["loop2"]\n'
            '[[tasks]]\nid = "loop2"\ncommand = "true"\ndepends_on = ["s2", "loop"]\n',
            r"dependency cycle loop -> loop2 -> loop",
        ),
    ],
)
def test_dependency_cycles_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        _load(tmp_path, text)


def test_a_diamond_is_not_a_cycle(tmp_path: Path) -> None:
    params = _load(
        tmp_path,
        '[[tasks]]\nid = "a"\ncommand = "true"\n'
        '[[tasks]]\nid = "b"\ncommand = "true"\ndepends_on = ["a"]\n'
        '[[tasks]]\nid = "c"\ncommand = "true"\ndepends_on = ["a"]\n'
        '[[tasks]]\nid = "d"\ncommand = "true"\ndepends_on = ["b", "c"]\n',
    )
    assert [t.id for t in params.task_instances()] == ["a", "b", "c", "d"]  # type: ignore[attr-defined]


def test_misspelled_placeholder_names_the_sweep_key(tmp_path: Path) -> None:
    text = '[[tasks]]\ncommand = "sim {seed} {sise}"\nsweep = { seed = [1], size = [2] }\n'
    with pytest.raises(UserError, match=r"\{sise\} is not a sweep key; did you mean \{size\}"):
        _load(tmp_path, text)


def test_other_braces_are_left_alone(tmp_path: Path) -> None:
    command = "awk '{print $1}' f; python3 -c \"print(f'{x}')\"; echo ${HOME} {n}"
    params = _load(tmp_path, "[[tasks]]\ncommand = '''" + command + "'''\nsweep = { n = [7] }\n")
    (task,) = params.task_instances()  # type: ignore[attr-defined]
    assert "awk '{print $1}' f" in task.command
    assert "print(f'{x}')" in task.command
    assert task.command.endswith("echo ${HOME} 7")


def test_broken_autoscale_formula_is_refused_with_its_position(tmp_path: Path) -> None:
    text = (
        "[pool]\nautoscale = true\n"
        'autoscale_formula = "$TargetDedicatedNodes = min(10, $PendingTasks.GetSample(1);"\n'
        '[[tasks]]\ncommand = "true"\n'
    )
    with pytest.raises(UserError, match=r"\[pool\] autoscale_formula: Line 1, Col 59: expected"):
        _load(tmp_path, text)


def test_formula_without_autoscale_is_an_error_not_ignored(tmp_path: Path) -> None:
    text = '[pool]\nautoscale_formula = "$TargetDedicatedNodes = 1;"\n[[tasks]]\ncommand = "true"\n'
    with pytest.raises(UserError, match=r"set autoscale = true"):
        _load(tmp_path, text)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("nosuch.key", r"--set nosuch.key: unknown section 'nosuch'"),
        ("pol.id", r"unknown section 'pol'; did you mean pool\?"),
        (
            "pool.dedicated_node",
            r"\[pool\] has no key 'dedicated_node'; did you mean dedicated_nodes",
        ),
    ],
)
def test_bad_set_override_blames_the_flag(tmp_path: Path, override: str, message: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[[tasks]]\ncommand = "true"\n')
    with pytest.raises(UserError, match=message):
        load_params(path, overrides={override: 1})


def test_set_keeps_a_version_as_text() -> None:
    from launcher.commands.options import parse_set

    assert parse_set(("runtime.version=3.12", "pool.dedicated_nodes=3", "pool.autoscale=true")) == {
        "runtime.version": "3.12",
        "pool.dedicated_nodes": 3,
        "pool.autoscale": True,
    }
