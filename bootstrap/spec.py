"""Runtime specs: what a node needs installed, validated before any value can reach a script.

Every string that ends up in the start-task script is checked here against a strict
allowlist (and the renderer quotes it as well), so a hostile value such as
``"numpy; touch /tmp/x"`` is refused with a message that says what is allowed.
"""

from __future__ import annotations

import difflib
import re
import shlex
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

# Names of keys that would hold a secret; they never belong in a parameter file.
SECRET_KEYS = frozenset(
    {
        "key",
        "access_key",
        "account_key",
        "password",
        "connection_string",
        "sas",
        "sas_token",
        "secret",
        "token",
    }
)


class StrictModel(BaseModel):
    """A model that refuses unknown keys (listing the valid ones) and secrets (naming the env var).

    The checks run before field validation so the error carries the offending key in its
    context; `launcher.params` turns it into one `FILE: [section] key: ...` line.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The environment variable a secret for this section comes from.
    secret_env: ClassVar[str] = "the environment"

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        valid = sorted(cls.model_fields, key=lambda k: k != "language")
        for key in data:
            if key in valid:
                continue
            if str(key).lower() in SECRET_KEYS:
                raise PydanticCustomError(
                    "secret_key",
                    "secrets do not go in the parameter file; set {env} in the environment",
                    {"key": key, "env": cls.secret_env},
                )
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise PydanticCustomError(
                "unknown_key",
                "unknown key; {hint}valid keys are {valid}",
                {"key": key, "valid": ", ".join(valid), "hint": hint},
            )
        return data


# ---------------------------------------------------------------------------------------
# value validators shared by the runtimes and the parameter file

_VERSION_XY = re.compile(r"^[0-9]{1,2}\.[0-9]{1,3}$")
_VERSION_XYZ = re.compile(r"^[0-9]{1,2}\.[0-9]{1,3}\.[0-9]{1,3}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Characters allowed in a URL we hand to curl/wget/pip: no quotes, spaces, `$`, backticks,
# semicolons, pipes, redirections or backslashes.
_URL_CHARS = re.compile(r"[A-Za-z0-9._~:/?#@%+=&,\-\[\]!*]+")
# PEP 508 requirements: only the characters a requirement needs (`;` introduces a marker,
# which `packaging` then parses strictly); never `$`, backticks, `|`, `&`, backslashes or
# newlines. The renderer quotes the value as well.
_REQUIREMENT_CHARS = re.compile(r"[A-Za-z0-9._\-\[\], <>=!~*+@:/#'\"();]+")
_JULIA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(@[0-9]+(\.[0-9]+){0,2})?$")
_JULIA_URL = re.compile(r"^https?://[A-Za-z0-9._~/\-]+(#[A-Za-z0-9._/\-]+)?$")
_R_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9.]*$")
_DEBIAN_NAME = re.compile(r"^[a-z0-9][a-z0-9.+\-]+$")
_ABS_PATH = re.compile(r"^/[A-Za-z0-9._/\-]*$")


def check_url(value: str, what: str = "URL") -> str:
    """An http(s) URL with a host and only URL-safe characters."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{what} must be an http:// or https:// URL, got {value!r}")
    if not _URL_CHARS.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} contains characters not allowed in a URL"
            " (quotes, spaces, $, `, ;, |, <, >, backslash)"
        )
    return value


def check_env_name(name: str) -> str:
    if not _ENV_NAME.fullmatch(name):
        raise ValueError(f"environment variable name {name!r} must match [A-Za-z_][A-Za-z0-9_]*")
    return name


def check_env_value(value: str) -> str:
    if "\x00" in value:
        raise ValueError("environment values must not contain NUL bytes")
    return value


def check_python_requirement(value: str) -> str:
    """A PEP 508 requirement (``numpy>=2``, ``pkg[extra]``, ``name @ https://...``)."""
    if not value.strip() or not _REQUIREMENT_CHARS.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a PEP 508 requirement (allowed characters: letters, digits,"
            " . _ - [ ] , < > = ! ~ * + @ : / # quotes and parentheses for markers)"
        )
    # Imported here: only Python package lists need it (10 ms of every CLI start otherwise).
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(value)
    except InvalidRequirement as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "invalid"
        raise ValueError(f"{value!r} is not a PEP 508 requirement: {reason}") from None
    if req.url is not None:
        check_url(req.url, "requirement URL")
    return value


def check_julia_package(value: str) -> str:
    """``Name``, ``Name@1.2`` or ``https://host/org/Repo.jl#rev``."""
    if _JULIA_NAME.fullmatch(value) or _JULIA_URL.fullmatch(value):
        return value
    raise ValueError(
        f'{value!r} is not a Julia package: use a registered name ("JSON3"), a name with'
        ' a version ("JSON3@1.14") or a git URL with an optional revision'
        ' ("https://github.com/org/Pkg.jl#main")'
    )


def _argv(value: Any) -> Any:
    """A hook: a list of argv strings, or one string split like a shell would (no expansion)."""
    if isinstance(value, str):
        try:
            value = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot split hook command {value!r}: {exc}") from None
    return value


class Hook(BaseModel):
    """One user command run by the start task, as exactly this argv (quoted, never re-parsed)."""

    model_config = ConfigDict(frozen=True)

    argv: list[str] = Field(min_length=1)

    @field_validator("argv")
    @classmethod
    def _no_nul(cls, argv: list[str]) -> list[str]:
        for arg in argv:
            if "\x00" in arg:
                raise ValueError("hook arguments must not contain NUL bytes")
        if not argv[0]:
            raise ValueError("a hook's program name must not be empty")
        return argv


def _hooks(value: Any) -> Any:
    """Accept ``["cmd a b", ["prog", "arg"]]`` or one string; normalise to Hook dicts."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ValueError("expected a list of commands (strings or argv lists)")
    out: list[Any] = []
    for item in value:
        if isinstance(item, Hook):
            out.append(item)
            continue
        argv = _argv(item)
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            raise ValueError(
                f"each hook must be a command string or a list of strings, got {item!r}"
            )
        if not argv:
            raise ValueError("a hook command must not be empty")
        out.append({"argv": argv})
    return out


HookList = Annotated[list[Hook], Field(default_factory=list)]


# ---------------------------------------------------------------------------------------
# runtimes


class RuntimeBase(StrictModel):
    """Keys every runtime accepts."""

    preinstalled: bool = False
    pre_install: HookList
    post_install: HookList
    environment: dict[str, str] = Field(default_factory=dict)

    @field_validator("pre_install", "post_install", mode="before")
    @classmethod
    def _parse_hooks(cls, value: Any) -> Any:
        return _hooks(value)

    @field_validator("environment")
    @classmethod
    def _env(cls, env: dict[str, str]) -> dict[str, str]:
        for name, value in env.items():
            check_env_name(name)
            check_env_value(value)
        return env


class PythonRuntime(RuntimeBase):
    """Python: the image's python3 or a uv-managed X.Y, with packages in a venv."""

    language: Literal["python"] = "python"
    version: str = "system"
    packages: list[str] = Field(default_factory=list)
    requirements: Path | None = None
    index_url: str | None = None
    installer: Literal["uv", "pip"] = "uv"
    uv_version: str = "0.13.9"

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if v != "system" and not _VERSION_XY.fullmatch(v):
            raise ValueError(f'expected "system" or a version like "3.12", got {v!r}')
        return v

    @field_validator("uv_version")
    @classmethod
    def _uv_version(cls, v: str) -> str:
        if not _VERSION_XYZ.fullmatch(v):
            raise ValueError(f'expected a uv version like "0.13.9", got {v!r}')
        return v

    @field_validator("packages")
    @classmethod
    def _packages(cls, pkgs: list[str]) -> list[str]:
        return [check_python_requirement(p) for p in pkgs]

    @field_validator("index_url")
    @classmethod
    def _index(cls, v: str | None) -> str | None:
        return None if v is None else check_url(v, "index_url")

    @field_validator("requirements")
    @classmethod
    def _req_path(cls, v: Path | None) -> Path | None:
        if v is not None and "\x00" in str(v):
            raise ValueError("requirements path must not contain NUL bytes")
        return v

    @property
    def needs_venv(self) -> bool:
        """The image's python3 with nothing to install needs no venv (keeps boots fast)."""
        return self.version != "system" or bool(self.packages) or self.requirements is not None


JULIA_MIRROR = "https://julialang-s3.julialang.org/bin"


class JuliaRuntime(RuntimeBase):
    """Julia from the official tarball layout, a depot in the shared dir, packages added once."""

    language: Literal["julia"] = "julia"
    version: str = "1.10.4"
    packages: list[str] = Field(default_factory=list)
    mirror: str = JULIA_MIRROR
    sha256: str | None = None
    depot_path: str | None = None

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not _VERSION_XYZ.fullmatch(v):
            raise ValueError(f'expected a Julia version like "1.10.4", got {v!r}')
        return v

    @field_validator("packages")
    @classmethod
    def _packages(cls, pkgs: list[str]) -> list[str]:
        return [check_julia_package(p) for p in pkgs]

    @field_validator("mirror")
    @classmethod
    def _mirror(cls, v: str) -> str:
        return check_url(v.rstrip("/"), "mirror")

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str | None) -> str | None:
        if v is not None and not _SHA256.fullmatch(v.lower()):
            raise ValueError("sha256 must be 64 hexadecimal characters")
        return None if v is None else v.lower()

    @field_validator("depot_path")
    @classmethod
    def _depot(cls, v: str | None) -> str | None:
        if v is not None and not _ABS_PATH.fullmatch(v):
            raise ValueError(
                f"depot_path must be an absolute path of letters, digits, . _ - /, got {v!r}"
            )
        return v

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])

    @property
    def tarball_url(self) -> str:
        return f"{self.mirror}/linux/x64/{self.minor}/julia-{self.version}-linux-x86_64.tar.gz"

    @property
    def all_packages(self) -> list[str]:
        """The user's packages plus JSON3 (the function runner's JSON codec) if missing."""
        names = {p.split("@")[0] for p in self.packages if not p.startswith("http")}
        return self.packages if "JSON3" in names else [*self.packages, "JSON3"]


class RRuntime(RuntimeBase):
    """R from the image or Debian, CRAN packages into a library in the shared dir."""

    language: Literal["r"] = "r"
    version: str = "system"
    source: Literal["system", "debian"] = "system"
    packages: list[str] = Field(default_factory=list)
    repo: str = "https://cloud.r-project.org"
    debian_packages: list[str] = Field(default_factory=list)

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if v != "system" and not _VERSION_XY.fullmatch(v):
            raise ValueError(f'expected "system" or an R version like "4.4", got {v!r}')
        return v

    @field_validator("packages")
    @classmethod
    def _packages(cls, pkgs: list[str]) -> list[str]:
        for p in pkgs:
            if not _R_NAME.fullmatch(p):
                raise ValueError(f"{p!r} is not a CRAN package name (letters, digits, dots)")
        return pkgs

    @field_validator("debian_packages")
    @classmethod
    def _debs(cls, pkgs: list[str]) -> list[str]:
        for p in pkgs:
            if not _DEBIAN_NAME.fullmatch(p):
                raise ValueError(f"{p!r} is not a Debian package name")
        return pkgs

    @field_validator("repo")
    @classmethod
    def _repo(cls, v: str) -> str:
        return check_url(v.rstrip("/"), "repo")

    @property
    def all_packages(self) -> list[str]:
        """CRAN packages plus jsonlite (the function runner's JSON codec)."""
        return self.packages if "jsonlite" in self.packages else [*self.packages, "jsonlite"]


class NoRuntime(RuntimeBase):
    """Nothing to install: hooks and environment only."""

    language: Literal["none"] = "none"


RuntimeSpec = PythonRuntime | JuliaRuntime | RRuntime | NoRuntime
RUNTIME_MODELS: dict[str, type[RuntimeBase]] = {
    "python": PythonRuntime,
    "julia": JuliaRuntime,
    "r": RRuntime,
    "none": NoRuntime,
}

PoolKind = Literal["marketplace", "gallery", "container"]
POOL_KINDS: tuple[PoolKind, ...] = ("marketplace", "gallery", "container")


def runtime_from_dict(data: dict[str, Any]) -> RuntimeSpec:
    """Build the runtime model for ``data["language"]`` (default ``none`` for an empty dict)."""
    language = data.get("language", "none" if not data else None)
    if language is None:
        raise PydanticCustomError(
            "missing_language",
            "missing value; set language to one of python, julia, r, none",
        )
    model = RUNTIME_MODELS.get(str(language))
    if model is None:
        raise PydanticCustomError(
            "bad_language",
            "unknown language {language!r}; expected one of python, julia, r, none",
            {"language": language},
        )
    spec = model.model_validate(data)
    assert isinstance(spec, PythonRuntime | JuliaRuntime | RRuntime | NoRuntime)
    return spec
