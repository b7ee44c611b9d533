"""paramiko `Connection` against a real OpenSSH server on loopback."""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from launcher.errors import UserError
from launcher.ssh import CommandTimeout, Connection
from tests.fixtures.sshd import SshdServer, free_port

pytestmark = pytest.mark.sshd

Connect = Callable[..., Connection]


def test_construction_connects_nothing_first_use_does(connect: Connect, sshd: SshdServer) -> None:
    before = sshd.log().count("Connection from")
    conn = connect()
    time.sleep(0.3)
    assert not conn.is_open
    assert sshd.log().count("Connection from") == before
    assert conn.run("true").exit_code == 0
    assert conn.is_open
    # and a Connection to a port where nothing listens is fine until used
    Connection("127.0.0.1", free_port(), "nobody", conn.key_path, host_id="p/n")


@pytest.mark.parametrize("code", [0, 1, 3, 255])
def test_exit_codes(connect: Connect, code: int) -> None:
    with connect() as conn:
        assert conn.run(f"exit {code}").exit_code == code


def test_stdout_and_stderr_kept_apart(connect: Connect) -> None:
    # interleaved writes, more than one SSH window (2 MiB) of each
    script = (
        "i=0; while [ $i -lt 40000 ]; do echo out-$i-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa;"
        " echo err-$i-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb >&2; i=$((i+1)); done; exit 4"
    )
    with connect() as conn:
        res = conn.run(f"bash -c '{script}'")
    assert res.exit_code == 4
    out, err = res.stdout.decode().splitlines(), res.stderr.decode().splitlines()
    assert len(out) == len(err) == 40000
    assert all(line.startswith("out-") for line in out)
    assert all(line.startswith("err-") for line in err)
    assert out[12345].startswith("out-12345-") and err[39999].startswith("err-39999-")


def test_env_values_arrive_verbatim(connect: Connect) -> None:
    value = "a b 'q' \"d\" $HOME `x` ; | \\ é"
    with connect() as conn:
        res = conn.run(
            'printf %s "$BL_VALUE"; printf %s "$OTHER" >&2', env={"BL_VALUE": value, "OTHER": "2"}
        )
        assert res.stdout.decode() == value
        assert res.stderr == b"2"
        with pytest.raises(UserError, match="not valid"):
            conn.run("true", env={"BAD;NAME": "x"})


def test_stdin_large_does_not_deadlock(connect: Connect) -> None:
    data = os.urandom(3 * 1024 * 1024)
    with connect() as conn:
        res = conn.run("cat; echo done >&2", stdin=data, timeout=30)
        assert res.stdout == data
        assert res.stderr == b"done\n"
        assert conn.run("wc -c", stdin="héllo").stdout.strip() == b"6"
        # no stdin: the command sees EOF at once instead of hanging
        assert conn.run("cat", timeout=10).stdout == b""


def test_stream_hands_over_chunks_as_they_come(connect: Connect) -> None:
    seen: list[tuple[float, bytes]] = []
    start = time.monotonic()
    with connect() as conn:
        code = conn.stream(
            "for i in 1 2 3; do echo line$i; sleep 0.3; done; echo bye >&2",
            lambda b: seen.append((time.monotonic() - start, b)),
            lambda b: seen.append((time.monotonic() - start, b"ERR:" + b)),
        )
    assert code == 0
    assert b"".join(b for _, b in seen) == b"line1\nline2\nline3\nERR:bye\n"
    first = next(t for t, b in seen if b.startswith(b"line1"))
    assert first < 0.5  # delivered while the command was still running


def test_command_timeout(connect: Connect) -> None:
    with connect() as conn:
        t0 = time.monotonic()
        with pytest.raises(CommandTimeout, match="did not finish"):
            conn.run("sleep 20", timeout=0.5)
        assert time.monotonic() - t0 < 3
        assert conn.run("echo still-usable").stdout == b"still-usable\n"


def test_sftp_client_is_memoized(connect: Connect, sshd: SshdServer, tmp_path: Path) -> None:
    marker = "Starting session: subsystem 'sftp'"
    before = sshd.log().count(marker)
    with connect() as conn:
        assert conn.sftp is conn.sftp
        conn.put(_file(tmp_path / "a", b"1"), str(tmp_path / "ra"))
        conn.get(str(tmp_path / "ra"), tmp_path / "la")
        conn.sftp.stat(str(tmp_path / "ra"))
    time.sleep(0.3)  # let sshd's log catch up
    assert sshd.log().count(marker) - before == 1


def test_file_both_ways(connect: Connect, tmp_path: Path) -> None:
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    payload = os.urandom(300_000)
    src = _file(tmp_path / "src.bin", payload, mode=0o750)
    with connect() as conn:
        dest = conn.put(src, str(remote_dir))  # into a directory: keeps the name
        assert dest == str(remote_dir / "src.bin")
        assert (remote_dir / "src.bin").read_bytes() == payload
        assert stat.S_IMODE((remote_dir / "src.bin").stat().st_mode) == 0o750
        back = conn.get(dest, tmp_path / "back.bin")
        assert back.read_bytes() == payload
        with pytest.raises(UserError, match="no such file"):
            conn.get(str(remote_dir / "missing"), tmp_path / "x")


def test_directory_tree_both_ways(connect: Connect, tmp_path: Path) -> None:
    local = tmp_path / "tree"
    files = {
        "a.txt": b"alpha",
        "sub/b.bin": os.urandom(70_000),
        "sub/deeper/c": b"",
        "sub/deeper/d d.txt": b"spaces",
    }
    for rel, data in files.items():
        _file(local / rel, data)
    (local / "empty").mkdir()
    remote = tmp_path / "remote" / "copy"
    with connect() as conn:
        sent = conn.put_dir(local, str(remote))
        assert sorted(sent) == sorted(str(remote / r) for r in files)
        assert (remote / "empty").is_dir()
        for rel, data in files.items():
            assert (remote / rel).read_bytes() == data
        done: list[str] = []
        got = conn.get_dir(str(remote), tmp_path / "back", on_file=lambda r, _l: done.append(r))
    assert sorted(got) == sorted(tmp_path / "back" / r for r in files)
    assert sorted(done) == sorted(str(remote / r) for r in files)
    for rel, data in files.items():
        assert (tmp_path / "back" / rel).read_bytes() == data


def test_get_many_in_parallel(connect: Connect, tmp_path: Path) -> None:
    src = tmp_path / "many"
    for i in range(200):
        _file(src / f"f{i:03}.txt", f"file {i}\n".encode() * 50)
    pairs = [(str(src / f"f{i:03}.txt"), tmp_path / "out" / f"f{i:03}.txt") for i in range(200)]
    count = 0
    lock = threading.Lock()

    def tick(_r: str, _l: Path) -> None:
        nonlocal count
        with lock:
            count += 1

    with connect() as conn:
        conn.get_many(pairs, max_workers=4, on_file=tick)
    assert count == 200
    for i in range(200):
        assert (tmp_path / "out" / f"f{i:03}.txt").read_bytes() == f"file {i}\n".encode() * 50


def test_wrong_key_is_a_clear_user_error(
    sshd: SshdServer, sshd_login_user: str, bl_home: Path
) -> None:
    from launcher.ssh import ensure_key_pair

    stranger = ensure_key_pair("never-authorized")
    conn = Connection(sshd.host, sshd.port, sshd_login_user, stranger.private_path, host_id="p/n0")
    with pytest.raises(UserError, match="refused user") as info:
        conn.run("true")
    assert "\n" not in str(info.value)


def test_refused_and_timed_out_connections(pool_key: object, tmp_path: Path) -> None:
    from launcher.ssh import ensure_key_pair

    key = ensure_key_pair("testpool").private_path
    closed = Connection("127.0.0.1", free_port(), "root", key, host_id="p/n1", connect_timeout=2)
    with pytest.raises(UserError, match="refused"):
        closed.run("true")
    # a server that accepts TCP but never says hello
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        port = mute.getsockname()[1]
        silent = Connection("127.0.0.1", port, "root", key, host_id="p/n2", connect_timeout=0.5)
        t0 = time.monotonic()
        with pytest.raises(UserError, match=r"0\.5 s") as info:
            silent.run("true")
        assert time.monotonic() - t0 < 5
        assert "\n" not in str(info.value)


def _file(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def test_get_many_stops_on_a_missing_file(connect: Connect, tmp_path: Path) -> None:
    src = tmp_path / "some"
    pairs: list[tuple[str, str | os.PathLike[str]]] = []
    for i in range(20):
        _file(src / f"f{i}", b"x")
        pairs.append((str(src / f"f{i}"), tmp_path / "out" / f"f{i}"))
    pairs.insert(3, (str(src / "gone"), tmp_path / "out" / "gone"))
    with connect() as conn:
        assert conn.get_many([]) == []
        with pytest.raises(UserError, match=r"gone: no such file or directory on node"):
            conn.get_many(pairs, max_workers=3)
        assert conn.run("echo fine").stdout == b"fine\n"


def test_auth_retry_waits_for_a_user_that_is_being_created(
    sshd: SshdServer, throwaway_user: str, bl_home: Path
) -> None:
    from launcher.ssh import ensure_key_pair

    key = ensure_key_pair("retrypool")
    conn = Connection(
        sshd.host, sshd.port, throwaway_user, key.private_path, host_id="p/n3", auth_retry=10
    )
    timer = threading.Timer(1.0, sshd.authorize, args=(throwaway_user, key.public_openssh))
    timer.start()
    t0 = time.monotonic()
    try:
        assert conn.run("id -un").stdout.decode().strip() == throwaway_user
    finally:
        timer.join()
        conn.close()
    assert 1.0 <= time.monotonic() - t0 < 6
    # without retry the refusal is immediate
    other = Connection(
        sshd.host, sshd.port, "root", ensure_key_pair("nobody").private_path, host_id="p/n4"
    )
    with pytest.raises(UserError, match="refused user 'root'"):
        other.run("true")


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../../etc/passwd", "x\0y"])
def test_unsafe_remote_names_are_refused(name: str) -> None:
    from pathlib import PurePosixPath

    from launcher.ssh.connection import safe_remote_name

    with pytest.raises(UserError, match="unsafe file name"):
        safe_remote_name(name, PurePosixPath("/remote"))
    assert safe_remote_name("ok..name", PurePosixPath("/r")) == "ok..name"
