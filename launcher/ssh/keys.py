"""The client's SSH key pairs: generated here, kept 0600 under `paths.ssh_dir()`, never sent.

One key pair per *scope*, and the launcher uses the pool id as the scope. Why per pool:
node users are created per pool (on each node that needs one), so one key per pool keeps
a key's reach equal to one pool; deleting a pool can delete its key (`remove_key_pair`)
without touching sessions on other pools, and two pools never share a credential.

The key is ed25519, generated with `cryptography` (paramiko cannot generate ed25519 keys),
written in the OpenSSH private-key format so that both paramiko and a user's own
``ssh -i KEY`` can use it. Only the public half (``sshPublicKey``) goes to Batch.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from launcher import paths
from launcher.errors import UserError

_SCOPE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class KeyPair:
    """A private key file on this machine and its public key in OpenSSH format."""

    private_path: Path
    public_openssh: str  # "ssh-ed25519 AAAA...", the value of Batch's sshPublicKey


def keys_dir() -> Path:
    """``ssh_dir()/keys``: created 0700 (and tightened to 0700 if it already exists)."""
    private_dir(paths.ssh_dir())
    return private_dir(paths.ssh_dir() / "keys")


def key_path(scope: str) -> Path:
    """Where the private key of `scope` lives (whether or not it exists yet)."""
    if not _SCOPE.match(scope):
        raise UserError(
            f"ssh key scope {scope!r} is not a valid name: use letters, digits, '_', '.', '-' "
            "(at most 128 characters, e.g. the pool id)"
        )
    return paths.ssh_dir() / "keys" / f"{scope}_ed25519"


def ensure_key_pair(scope: str) -> KeyPair:
    """Return the key pair of `scope`, generating it on first use."""
    path = key_path(scope)
    keys_dir()
    if not path.exists():
        _generate(path, comment=f"batchlaunch-{scope}")
    return load_key_pair(path)


def load_key_pair(path: Path) -> KeyPair:
    """Load an existing private key and derive its public key."""
    data = read_private_file(path)
    try:
        key = serialization.load_ssh_private_key(data, password=None)
    except ValueError as exc:
        raise UserError(f"{path}: not an unencrypted OpenSSH private key ({exc})") from exc
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return KeyPair(private_path=path, public_openssh=public)


def read_private_file(path: Path) -> bytes:
    """Read a private key, refusing one that others could read (as OpenSSH does)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ssh private key: {exc.strerror}") from exc
    if mode & 0o077:
        raise UserError(
            f"{path}: ssh private key has permissions {mode:04o}, readable by others; "
            f"run `chmod 600 {path}` (or delete it to generate a new one)"
        )
    return data


def remove_key_pair(scope: str) -> bool:
    """Delete the key pair of `scope` (e.g. when its pool is deleted); True if one existed."""
    path = key_path(scope)
    existed = path.exists()
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    return existed


def write_private_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` with mode 0600 from the first byte, atomically.

    The file is created 0600 by `os.open` (never chmod-ed after a readable write), then
    hard-linked into place so that two processes generating the same key concurrently
    both end up using whichever was linked first.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # someone else won the race: keep theirs
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _generate(path: Path, comment: str) -> None:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    write_private_file(path, private)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    pub_path = path.with_name(path.name + ".pub")
    pub_path.write_text(public.decode() + f" {comment}\n")


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) with mode 0700, tightening an existing looser one."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, mode & 0o700)
    return path
