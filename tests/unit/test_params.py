"""The parameter file through the real CLI (`batchlaunch render`): one-line errors, exit 2."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import pytest

from launcher.cli import main
from launcher.errors import UserError
from launcher.legacy_params import LegacyParamsWarning
from launcher.params import Params, expand_tasks, load_params

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHLAUNCH_HOME", str(tmp_path / "home"))
    for name in ("AZURE_BATCH_ENDPOINT", "AZURE_BATCH_ACCOUNT", "AZURE_STORAGE_CONNECTION_STRING"):
        monkeypatch.delenv(name, raising=False)


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, text: str, name: str = "params.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> str:
    """Render `text` through the CLI; assert exit 2 and exactly one `error:` line."""
    path = write(tmp_path, text)
    code, out, err = cli(["render", str(path)], capsys)
    assert code == 2, (out, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), err
    assert "Traceback" not in err
    return lines[0].removeprefix(f"error: {path}: ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[pool]\nidd = "x"\n',
            "[pool] idd: unknown key; did you mean id? valid keys are id, vm_size,",
        ),
        ("[pools]\nid = 1\n", "pools: unknown section; valid sections are batch, storage, pool,"),
        (
            '[runtime]\nlanguage = "julia"\nmirorr = "x"\n',
            "[runtime] mirorr: unknown key; did you mean mirror? valid keys are language,",
        ),
        (
            '[[tasks]]\ncommand = "x"\ncomand = "y"\n',
            "[[tasks]] #1 comand: unknown key; did you mean command? valid keys are id, command,",
        ),
        (
            '[pool]\nimage = {publisher = "a", offer = "b", sku = "c", node_agent = "d"}\n',
            "[pool] image.node_agent: unknown key; did you mean node_agent_sku_id? valid keys",
        ),
    ],
)
def test_unknown_keys_list_the_valid_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    assert error_of(tmp_path, text, capsys).startswith(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[pool]\ndedicated_nodes = "two"\n',
            "[pool] dedicated_nodes: expected a valid integer, unable to parse string as an"
            " integer (got 'two')",
        ),
        (
            '[pool]\ntask_scheduling = "random"\n',
            "[pool] task_scheduling: expected 'spread' or 'pack' (got 'random')",
        ),
        (
            "[pool]\nautoscale_interval_minutes = 1\n",
            "[pool] autoscale_interval_minutes: expected greater than or equal to 5 (got 1)",
        ),
        (
            "[pool]\nautoscale = true\n",
            "[pool]: autoscale = true needs autoscale_formula or max_autoscale_nodes",
        ),
        ('[[tasks]]\nid = "a"\n', "[[tasks]] #2 command: missing value (required)"),
        (
            '[runtime]\npackages = ["numpy"]\n',
            "[runtime] language: missing or unknown; set language to one of python, julia, r, none",
        ),
        (
            '[runtime]\nlanguage = "python"\nversion = "3.12; rm -rf /"\n',
            '[runtime] version: expected "system" or a version like "3.12", got \'3.12; rm -rf /\'',
        ),
        (
            '[runtime]\nlanguage = "python"\npackages = ["numpy; touch /tmp/x"]\n',
            "[runtime] packages: 'numpy; touch /tmp/x' is not a PEP 508 requirement:",
        ),
        (
            '[runtime]\nlanguage = "julia"\nmirror = "ftp://example.org"\n',
            "[runtime] mirror: mirror must be an http:// or https:// URL, got 'ftp://example.org'",
        ),
        (
            '[pool]\nimage = "ubuntu-99.04"\n',
            "[pool] image: unknown alias 'ubuntu-99.04'; use one of ubuntu-22.04,",
        ),
        (
            '[[tasks]]\ncommand = "a"\ndepends_on = ["nope"]\n',
            "[[tasks]] #1 depends_on: unknown task id(s) nope; known ids are task1",
        ),
        ("[pool\n", "not valid TOML: "),
    ],
)
def test_bad_values_say_what_is_expected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    if "#2 command" in expected:
        text = '[[tasks]]\ncommand = "ok"\n' + text
    assert error_of(tmp_path, text, capsys).startswith(expected)


@pytest.mark.parametrize(
    ("text", "env"),
    [
        ('[batch]\nkey = "abc"\n', "AZURE_BATCH_ACCESS_KEY"),
        ('[batch]\naccess_key = "abc"\n', "AZURE_BATCH_ACCESS_KEY"),
        ('[storage]\nconnection_string = "AccountKey=x"\n', "AZURE_STORAGE_CONNECTION_STRING"),
        (
            '[pool]\ncontainer_image = "r/i:1"\n'
            '[pool.container_registry]\nserver = "r.io"\nusername = "u"\npassword = "p"\n',
            "BATCHLAUNCH_REGISTRY_PASSWORD",
        ),
    ],
)
def test_secrets_are_refused_with_the_env_var_to_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, env: str
) -> None:
    message = error_of(tmp_path, text, capsys)
    assert f"secrets do not go in the parameter file; set {env} in the environment" in message
    assert "abc" not in message and "AccountKey" not in message


def test_missing_file_and_bad_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(["render", str(tmp_path / "nope.toml")], capsys)
    assert code == 2 and err.strip() == f"error: {tmp_path / 'nope.toml'}: parameter file not found"
    bad = write(tmp_path, '{"pool": ', "p.json")
    code, _, err = cli(["render", str(bad)], capsys)
    assert code == 2 and err.startswith(f"error: {bad}: not valid JSON: ")


def test_json_and_toml_are_equivalent(tmp_path: Path) -> None:
    doc = {
        "pool": {"id": "p1", "mounts": ["inputs", {"source": "outputs", "target": "res"}]},
        "runtime": {"language": "python", "packages": ["six"]},
        "tasks": [{"command": "echo {x}", "sweep": {"x": [1, 2]}}],
    }
    toml = write(
        tmp_path,
        '[pool]\nid = "p1"\nmounts = ["inputs", {source = "outputs", target = "res"}]\n'
        '[runtime]\nlanguage = "python"\npackages = ["six"]\n'
        '[[tasks]]\ncommand = "echo {x}"\nsweep = {x = [1, 2]}\n',
    )
    a = load_params(write(tmp_path, json.dumps(doc), "p.json"))
    b = load_params(toml)
    assert a.model_dump() == b.model_dump()
    assert [m.target for m in a.pool.mounts] == ["inputs", "res"]


def test_precedence_defaults_file_env_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert Params().batch.endpoint == "emulator" and Params().batch.account == "devbatch"
    path = write(
        tmp_path,
        '[batch]\nendpoint = "https://file.westeurope.batch.azure.com"\naccount = "fromfile"\n'
        "[pool]\ndedicated_nodes = 3\n",
    )
    assert load_params(path, env={}).batch.account == "fromfile"
    env = {
        "AZURE_BATCH_ENDPOINT": "https://env.westeurope.batch.azure.com",
        "AZURE_BATCH_ACCOUNT": "fromenv",
        "AZURE_STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=https;AccountName=envstore;"
        "AccountKey=c2VjcmV0;EndpointSuffix=core.windows.net",
    }
    p = load_params(path, env=env)
    assert (p.batch.endpoint, p.batch.account) == (env["AZURE_BATCH_ENDPOINT"], "fromenv")
    assert p.storage.url == "https://envstore.blob.core.windows.net"
    assert "c2VjcmV0" not in p.model_dump_json()
    p = load_params(
        path, overrides={"batch.account": "fromflag", "pool.dedicated_nodes": 5}, env=env
    )
    assert (p.batch.account, p.pool.dedicated_nodes) == ("fromflag", 5)
    assert p.batch.endpoint == env["AZURE_BATCH_ENDPOINT"]
    # the same through the CLI: --set wins over the environment and the file
    code, out, err = cli(["render", str(path), "--set", "runtime.language=julia"], capsys)
    assert code == 0, err
    assert "BL_LANGUAGE=julia" in out
    code, _, err = cli(["render", str(path), "--set", "pool.dedicated_nodes=-1"], capsys)
    assert code == 2
    assert err.strip() == (
        f"error: {path}: [pool] dedicated_nodes: expected greater than or equal to 0 (got -1)"
    )


def test_relative_paths_resolve_against_the_parameter_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = tmp_path / "proj"
    sub.mkdir()
    (sub / "sim.py").write_text("print(1)\n")
    (sub / "req.txt").write_text("six\n")
    path = write(
        sub,
        '[runtime]\nlanguage = "python"\nrequirements = "req.txt"\n'
        '[[tasks]]\ncommand = "python3 sim.py"\nresource_files = ["sim.py", "https://x.org/a"]\n',
    )
    monkeypatch.chdir(tmp_path)
    p = load_params(path.relative_to(tmp_path))
    assert p.runtime.requirements == sub / "req.txt"  # type: ignore[union-attr]
    assert p.tasks[0].resource_files == [str(sub / "sim.py"), "https://x.org/a"]
    (sub / "sim.py").unlink()
    with pytest.raises(UserError, match=r"\[\[tasks\]\] #1 resource_files: not found: .*sim.py"):
        load_params(path)


def test_sweeps_expand_and_dependencies_follow(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[job]\nmax_task_retries = 2\n"
        '[[tasks]]\nid = "prep"\ncommand = "echo prep"\n'
        '[[tasks]]\nid = "sim"\ncommand = "run --seed {seed} --name {name} ${HOME}"\n'
        'sweep = {seed = [1, 2], name = ["a b", "c"]}\ndepends_on = ["prep"]\n'
        '[[tasks]]\ncommand = "merge"\ndepends_on = ["sim"]\nmax_task_retries = 0\n',
    )
    p = load_params(path)
    tasks = expand_tasks(p)
    assert [t.id for t in tasks] == ["prep", "sim-0", "sim-1", "sim-2", "sim-3", "task3"]
    assert tasks[1].command == "run --seed 1 --name 'a b' ${HOME}"
    assert tasks[4].command == "run --seed 2 --name c ${HOME}"
    assert tasks[4].environment == {"BATCHLAUNCH_SWEEP_SEED": "2", "BATCHLAUNCH_SWEEP_NAME": "c"}
    assert tasks[1].depends_on == ["prep"]
    assert tasks[5].depends_on == ["sim-0", "sim-1", "sim-2", "sim-3"]
    assert [t.max_task_retries for t in tasks] == [2, 2, 2, 2, 2, 0]
    assert p.uses_task_dependencies is True
    assert (
        load_params(write(tmp_path, '[[tasks]]\ncommand = "x"\n', "b.toml")).uses_task_dependencies
        is False
    )


def test_a_sweep_range_stands_for_its_list(tmp_path: Path) -> None:
    ranged = load_params(
        write(
            tmp_path,
            '[[tasks]]\ncommand = "run {i} {j}"\n'
            "sweep = { i = { from = 1, to = 5, step = 2 }, j = { from = 2, to = 1, step = -1 } }\n",
        )
    )
    listed = load_params(
        write(
            tmp_path,
            '[[tasks]]\ncommand = "run {i} {j}"\nsweep = { i = [1, 3, 5], j = [2, 1] }\n',
            "b.toml",
        )
    )
    assert ranged.tasks[0].sweep == {"i": [1, 3, 5], "j": [2, 1]}
    assert [t.command for t in ranged.task_instances()] == [
        t.command for t in listed.task_instances()
    ]
    big = load_params(
        write(tmp_path, '[[tasks]]\ncommand = "x {i}"\nsweep = { i = { from = 0, to = 9999 } }\n')
    )
    ids = [t.id for t in big.task_instances()]
    assert len(ids) == 10_000 and ids[-1] == "task1-9999"


@pytest.mark.parametrize(
    ("sweep", "expected"),
    [
        ("{ from = 1 }", "needs whole numbers from and to"),
        ("{ from = 1.5, to = 3 }", "needs whole numbers from and to"),
        ("{ from = 1, to = 5, stp = 2 }", "takes from, to and step, not stp"),
        ("{ from = 5, to = 1 }", "step 1 never gets from 5 to 1; use step = -1"),
        ("{ from = 1, to = 5, step = 0 }", "use a step other than 0"),
        ("{ from = 0, to = 5000000 }", "5000001 values, more than 1,000,000"),
    ],
)
def test_a_bad_sweep_range_says_how_to_write_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sweep: str, expected: str
) -> None:
    message = error_of(
        tmp_path, f'[[tasks]]\ncommand = "x {{i}}"\nsweep = {{ i = {sweep} }}\n', capsys
    )
    assert message.startswith("[[tasks]] #1 sweep: sweep key 'i': ")
    assert expected in message


def test_a_run_of_more_than_a_million_tasks_is_refused_before_expanding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        '[[tasks]]\ncommand = "x {i} {j}"\n'
        "sweep = { i = { from = 1, to = 100000 }, j = { from = 1, to = 100000 } }\n"
        '[[tasks]]\ncommand = "y"\n'
    )
    started = time.perf_counter()
    message = error_of(tmp_path, text, capsys)
    assert time.perf_counter() - started < 5  # ten billion tasks were not expanded
    assert message == (
        "[[tasks]] sweep: 10,000,000,001 tasks (#1: 100,000 x 100,000), more than 1,000,000"
        " in one run; split the sweeps over several runs"
    )


def test_pool_kinds(tmp_path: Path) -> None:
    gallery = write(
        tmp_path,
        '[pool]\nimage = {gallery_image_id = "/subscriptions/s/resourceGroups/g/providers/'
        'Microsoft.Compute/galleries/x/images/julia"}\n'
        '[runtime]\nlanguage = "julia"\npreinstalled = true\n',
    )
    p = load_params(gallery)
    assert p.pool.kind == "gallery"
    assert 'step "check julia"' in p.start_task_script()
    container = write(tmp_path, '[pool]\ncontainer_image = "python:3.11-slim"\n', "c.toml")
    assert load_params(container).pool.kind == "container"
    assert load_params(write(tmp_path, "", "e.toml")).pool.kind == "marketplace"


CLUSTERLESS = {
    "_POOL_ID": "redwood",
    "_POOL_COUNT": "2",
    "_NODE_COUNT_PER_POOL": "4",
    "_POOL_VM_SIZE": "Standard_E4s_v3",
    "_JOB_ID": "redwood-job",
    "_NODE_OS_PUBLISHER": "Canonical",
    "_NODE_OS_OFFER": "0001-com-ubuntu-server-focal",
    "_NODE_OS_SKU": "20_04-lts",
    "_BLOB_CONTAINER": "redwood-temp",
    "_NUM_RETRYS": "2",
    "_CONTAINER": "user/redwood:v1.0",
    "_JULIA_DEPOT_PATH": "/opt/julia-depot",
    "_OMP_NUM_THREADS": "2",
    "_JULIA_NUM_THREADS": "3",
    "_INTER_NODE_CONNECTION": "1",
    "_NUM_NODES_PER_TASK": "1",
    "_NUM_PROCS_PER_NODE": "1",
    "_MPI_RUN": "0",
    "_VERBOSE": "1",
    "_CREDENTIALS": "credentials.json",
}


def test_clusterless_parameters_json_is_mapped_with_warnings(tmp_path: Path) -> None:
    path = write(tmp_path, json.dumps(CLUSTERLESS), "parameters.json")
    with pytest.warns(LegacyParamsWarning) as caught:
        p = load_params(path)
    messages = sorted(str(w.message) for w in caught)
    assert any("_POOL_COUNT = '2' not supported" in m for m in messages)
    assert any("_INTER_NODE_CONNECTION = '1' not supported" in m for m in messages)
    assert any("_CREDENTIALS ignored: credentials come from the environment" in m for m in messages)
    assert any("_VERBOSE" in m for m in messages)
    assert not any("_MPI_RUN" in m or "_NUM_NODES_PER_TASK" in m for m in messages)
    assert (p.pool.id, p.pool.dedicated_nodes, p.pool.vm_size) == ("redwood", 4, "standard_e4s_v3")
    assert p.pool.image.model_dump() == {  # type: ignore[union-attr]
        "publisher": "Canonical",
        "offer": "0001-com-ubuntu-server-focal",
        "sku": "20_04-lts",
        "version": "latest",
        "node_agent_sku_id": "batch.node.ubuntu 20.04",
    }
    assert (p.job.id, p.job.max_task_retries, p.storage.container) == (
        "redwood-job",
        2,
        "redwood-temp",
    )
    assert p.pool.container_image == "user/redwood:v1.0" and p.pool.kind == "container"
    assert p.runtime.language == "julia"
    assert p.runtime.depot_path == "/opt/julia-depot"  # type: ignore[union-attr]
    assert p.runtime.environment == {"OMP_NUM_THREADS": "2", "JULIA_NUM_THREADS": "3"}


def test_clusterless_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path, json.dumps({"_POOL_ID": "p", "_CREDENTIALS": "c.json"}), "parameters.json"
    )
    code, out, err = cli(["render", str(path)], capsys)
    assert code == 0
    assert out.startswith("#!/bin/bash")
    assert err.splitlines() == [
        f"warning: {path}: _CREDENTIALS ignored: credentials come from the environment"
        " (AZURE_BATCH_ACCESS_KEY, AZURE_STORAGE_CONNECTION_STRING) or Entra ID"
    ]
    bad = write(tmp_path, json.dumps({"_NODE_COUNT_PER_POOL": "four"}), "bad.json")
    code, _, err = cli(["render", str(bad)], capsys)
    assert code == 2
    assert err.strip() == f"error: {bad}: _NODE_COUNT_PER_POOL: expected a whole number, got 'four'"


def test_render_writes_a_file_and_has_help(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "start.sh"
    code, _, err = cli(
        ["render", str(REPO / "examples/quickstart/params.toml"), "-o", str(out_file)], capsys
    )
    assert code == 0, err
    assert out_file.read_text().startswith("#!/bin/bash\n")
    assert out_file.stat().st_mode & 0o777 == 0o755
    assert "python runtime, marketplace pool" in err
    code, out, _ = cli(["render", "--help"], capsys)
    assert code == 0 and "start-task script" in out and "--set KEY=VALUE" in out


def test_quickstart_is_a_six_task_sweep() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = load_params(REPO / "examples/quickstart/params.toml")
    tasks = expand_tasks(p)
    assert len(tasks) == 6 and len({t.command for t in tasks}) == 6
    assert p.runtime.language == "python" and not p.runtime.needs_venv  # type: ignore[union-attr]


def test_packages_on_a_container_pool_warn(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[pool]\ncontainer_image = "python:3.11-slim"\n'
        '[runtime]\nlanguage = "python"\npackages = ["six"]\n',
    )
    with pytest.warns(UserWarning, match=r"\[runtime\] packages: ignored on a container pool"):
        load_params(path)
