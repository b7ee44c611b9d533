"""`[storage] url = "azurite"`: use the Azurite blob emulator, starting it when needed.

Azurite serves the real Blob REST API on this machine, so runs with it exercise exactly the
SAS and upload paths they would on Azure. When nothing answers on its port, batchlaunch
starts ``azurite-blob`` (from PATH, or this checkout's ``tools/azurite``) in the
background, with its data under ``BATCHLAUNCH_HOME/azurite`` and the flag the current blob
SDK needs (``--skipApiVersionCheck``), and leaves it running for the next command.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from launcher import paths
from launcher.errors import UserError

ACCOUNT = "devstoreaccount1"
#: Azurite's documented development key (public, like the emulator's).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
PORT_ENV = "BATCHLAUNCH_AZURITE_PORT"
DEFAULT_PORT = 10000
_CHECKOUT_BIN = Path(__file__).resolve().parent.parent / "tools/azurite/node_modules/.bin"


def connection_string(port: int) -> str:
    return (
        "DefaultEndpointsProtocol=http;"
        f"AccountName={ACCOUNT};AccountKey={KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
    )


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def azurite_command(binary: str, port: int, location: Path) -> list[str]:
    """The ``azurite-blob`` command line for 127.0.0.1:PORT with its data in LOCATION
    (``--skipApiVersionCheck``: the blob SDK is newer than Azurite's declared API version)."""
    return [
        binary,
        "--skipApiVersionCheck",
        "--loose",
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--location",
        str(location),
    ]


def find_azurite() -> str | None:
    """``azurite-blob`` on PATH, else the one `scripts/setup-test-env.sh` installs."""
    found = shutil.which("azurite-blob")
    if found:
        return found
    candidate = _CHECKOUT_BIN / "azurite-blob"
    return str(candidate) if candidate.exists() else None


def ensure_azurite(env: Mapping[str, str] | None = None, timeout: float = 30.0) -> str:
    """The connection string of a running Azurite on 127.0.0.1, started if need be."""
    env = os.environ if env is None else env
    port = int(env.get(PORT_ENV) or DEFAULT_PORT)
    if _listening(port):
        return connection_string(port)
    binary = find_azurite()
    if binary is None:
        raise UserError(
            f'[storage] url = "azurite": nothing listens on 127.0.0.1:{port} and azurite-blob '
            "is not installed; install it (npm install -g azurite) or start it yourself "
            "(azurite-blob --skipApiVersionCheck --blobHost 127.0.0.1), or set "
            "AZURE_STORAGE_CONNECTION_STRING"
        )
    data = paths.home() / "azurite"
    data.mkdir(parents=True, exist_ok=True)
    log = (data / "azurite.log").open("ab")
    process = subprocess.Popen(
        azurite_command(binary, port, data),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    (data / "azurite.pid").write_text(str(process.pid))
    deadline = time.monotonic() + timeout
    while not _listening(port):
        if process.poll() is not None or time.monotonic() > deadline:
            raise UserError(
                f'[storage] url = "azurite": azurite-blob did not start on port {port}; '
                f"see {data / 'azurite.log'}"
            )
        time.sleep(0.1)
    return connection_string(port)
