"""The ``[node-id] line`` prefixer of --all-nodes."""

from __future__ import annotations

import io
import threading

from launcher.ssh import LinePrefixer


def test_lines_cut_anywhere_come_out_whole() -> None:
    sink = io.BytesIO()
    p = LinePrefixer("node-1", sink)
    for chunk in [b"al", b"pha\nbe", b"ta\n\ngam", b"ma"]:
        p.feed(chunk)
    assert sink.getvalue() == b"[node-1] alpha\n[node-1] beta\n[node-1] \n"
    p.flush()
    assert sink.getvalue().endswith(b"[node-1] gamma\n")
    p.flush()  # nothing pending: nothing written
    assert sink.getvalue().count(b"gamma") == 1


def test_parallel_writers_never_mix_lines() -> None:
    sink = io.BytesIO()
    lock = threading.Lock()

    def write(node: str) -> None:
        p = LinePrefixer(node, sink, lock)
        for i in range(300):
            p.feed(f"line {i} ".encode())
            p.feed(b"of " + node.encode() + b"\n")

    threads = [threading.Thread(target=write, args=(f"n{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = sink.getvalue().decode().splitlines()
    assert len(lines) == 1200
    for line in lines:
        node = line[1 : line.index("]")]
        assert line.endswith(f"of {node}"), line
