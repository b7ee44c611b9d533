"""The tool's key pairs: 0600 from creation, 0700 dirs, OpenSSH formats, stable per scope."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import paramiko
import pytest

from launcher import paths
from launcher.errors import UserError
from launcher.ssh import ensure_key_pair, key_path, remove_key_pair
from launcher.ssh.keys import write_private_file


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_key_pair_is_private_and_in_openssh_formats(bl_home: Path) -> None:
    old = os.umask(0)  # even a permissive umask must not widen the key file
    try:
        pair = ensure_key_pair("pool-a")
    finally:
        os.umask(old)
    assert pair.private_path == paths.ssh_dir() / "keys" / "pool-a_ed25519"
    assert mode(pair.private_path) == 0o600
    assert mode(paths.ssh_dir()) == 0o700
    assert mode(paths.ssh_dir() / "keys") == 0o700
    assert pair.public_openssh.startswith("ssh-ed25519 AAAA")
    # paramiko loads it, and its public half is what we hand to Batch
    key = paramiko.Ed25519Key.from_private_key_file(str(pair.private_path))
    assert pair.public_openssh == f"{key.get_name()} {key.get_base64()}"
    # and OpenSSH's own tools agree
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(pair.private_path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert " ".join(derived[:2]) == pair.public_openssh


def test_same_scope_same_key_other_scope_other_key(bl_home: Path) -> None:
    a1 = ensure_key_pair("pool-a")
    a2 = ensure_key_pair("pool-a")
    b = ensure_key_pair("pool-b")
    assert a1 == a2
    assert b.public_openssh != a1.public_openssh
    assert remove_key_pair("pool-a") is True
    assert not a1.private_path.exists()
    assert ensure_key_pair("pool-a").public_openssh != a1.public_openssh


def test_loose_ssh_dir_is_tightened(bl_home: Path) -> None:
    paths.ssh_dir().mkdir(parents=True, mode=0o755)
    os.chmod(paths.ssh_dir(), 0o755)
    ensure_key_pair("p")
    assert mode(paths.ssh_dir()) == 0o700


def test_key_readable_by_others_is_refused(bl_home: Path) -> None:
    pair = ensure_key_pair("p")
    os.chmod(pair.private_path, 0o644)
    with pytest.raises(UserError, match="chmod 600"):
        ensure_key_pair("p")


@pytest.mark.parametrize("scope", ["", "../x", "a b", "x/y", "-lead"])
def test_bad_scope_is_a_user_error(bl_home: Path, scope: str) -> None:
    with pytest.raises(UserError, match="not a valid name"):
        key_path(scope)


def test_write_private_file_keeps_the_first_writer(tmp_path: Path) -> None:
    target = tmp_path / "k"
    write_private_file(target, b"first")
    write_private_file(target, b"second")
    assert target.read_bytes() == b"first"
    assert mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["k"]  # no temp files left behind
