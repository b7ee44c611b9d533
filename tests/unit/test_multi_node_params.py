"""Multi-node tasks in the parameter file: `nodes` / `coordination_command`, their checks
(one-line errors through the real CLI) and the AzureClusterlessHPC `_NUM_NODES_PER_TASK`."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from launcher.legacy_params import LegacyParamsWarning
from launcher.params import load_params
from tests.unit.test_params import error_of, write


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHLAUNCH_HOME", str(tmp_path / "home"))


def test_nodes_expand_into_every_task_instance(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[pool]\ndedicated_nodes = 3\n[[tasks]]\nid = "m"\nnodes = 3\n'
        'coordination_command = "start-daemon {n}"\ncommand = "run {n}"\nsweep = { n = [1, 2] }\n'
        '[[tasks]]\ncommand = "single"\n',
    )
    params = load_params(path)
    tasks = params.task_instances()
    assert [(t.id, t.nodes, t.coordination_command) for t in tasks] == [
        ("m-0", 3, "start-daemon 1"),
        ("m-1", 3, "start-daemon 2"),
        ("task2", 1, None),
    ]
    assert params.multi_node


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[pool]\ndedicated_nodes = 2\nlow_priority_nodes = 1\n[[tasks]]\ncommand = "x"\n'
            "nodes = 4\n",
            "[[tasks]] #1 nodes: 4 is more than the pool's 3 node(s) ([pool] dedicated_nodes +"
            " low_priority_nodes); lower nodes or grow the pool",
        ),
        (
            '[pool]\ndedicated_nodes = 2\ntask_slots_per_node = 4\n[[tasks]]\ncommand = "x"\n'
            "nodes = 2\n",
            "[[tasks]] #1 nodes: multi-node tasks need [pool] task_slots_per_node = 1 (it is 4);"
            " Batch never schedules them otherwise",
        ),
        (
            '[[tasks]]\ncommand = "x"\ncoordination_command = "y"\n',
            "coordination_command needs nodes > 1",
        ),
        ('[[tasks]]\ncommand = "x"\nnodes = 0\n', "nodes"),
    ],
)
def test_bad_multi_node_settings_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    assert expected in error_of(tmp_path, text, capsys)


def test_autoscale_pool_accepts_more_nodes_than_it_has_now(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[pool]\nautoscale = true\nmax_autoscale_nodes = 4\n[[tasks]]\ncommand = "x"\nnodes = 4\n',
    )
    assert load_params(path).task_instances()[0].nodes == 4


def test_clusterless_nodes_per_task_makes_multi_node_tasks(tmp_path: Path) -> None:
    raw = {
        "_POOL_ID": "mpi",
        "_NODE_COUNT_PER_POOL": "2",
        "_NUM_NODES_PER_TASK": "2",
        "_INTER_NODE_CONNECTION": "1",
        "_MPI_RUN": "1",
        "tasks": [{"command": "a"}, {"command": "b", "nodes": 1}],
    }
    path = write(tmp_path, json.dumps(raw), "parameters.json")
    with pytest.warns(LegacyParamsWarning) as caught:
        params = load_params(path)
    messages = [str(w.message) for w in caught]
    assert [t.nodes for t in params.task_instances()] == [2, 1]
    assert not any("_INTER_NODE_CONNECTION" in m or "_NUM_NODES_PER_TASK" in m for m in messages)
    assert any("_MPI_RUN = '1' not supported" in m and "AZ_BATCH_HOST_LIST" in m for m in messages)

    raw.pop("tasks")
    raw.pop("_MPI_RUN")
    path = write(tmp_path, json.dumps(raw), "parameters.json")
    with pytest.warns(LegacyParamsWarning, match="_NUM_NODES_PER_TASK = 2 applies to"):
        load_params(path)

    raw["_NUM_NODES_PER_TASK"] = "1"
    path = write(tmp_path, json.dumps(raw), "parameters.json")
    with pytest.warns(LegacyParamsWarning, match="_INTER_NODE_CONNECTION = '1' not supported"):
        load_params(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        raw.pop("_INTER_NODE_CONNECTION")
        load_params(write(tmp_path, json.dumps(raw), "parameters.json"))
