"""`bench/run --quick` runs every bench and prints the one table, so bench/run does not rot
as the daemon changes. Its numbers are not judged here (a shared machine; bench/ holds the
targets): only that every bench ran and each figure has its line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH_RUN = Path(__file__).resolve().parent.parent / "bench" / "run"
FIGURES = ("press → siren, idle", "press → committed / bare commit", "press → siren while busy",
           "start → READY=1", "idle CPU", "idle storage writes", "idle fsync", "RSS",
           "press → AT+CMGS", "drained, batched", "press → accepted", "press → snapshot",
           "MQTT backlog", "press → on the MQTT broker", "RSS [mqtt]", "RSS of edge-alarm web",
           "press → alarm on the guard-room page")


def test_bench_run_quick_prints_every_figure(tmp_path):
    run = subprocess.run([str(BENCH_RUN), "--quick", "--dir", str(tmp_path)],
                         # sbin: Debian puts mosquitto there (bench_mqtt's broker)
                         env={"EDGE_ALARM_PYTHON": sys.executable,
                              "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                         capture_output=True, text=True, timeout=600)
    assert run.returncode in (0, 1), run.stderr[-3000:]  # 1: a target short, not a failure
    out = run.stdout
    assert "| figure | measured | target | |" in out
    for line in ("python ", "cpus ", "load "):
        assert line in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    for figure in FIGURES:
        assert any(figure in row for row in rows), f"no line for {figure!r}:\n{out}"
    failed = [row for row in rows if "| failed: " in row]
    assert not failed, "\n".join(failed) + "\n" + run.stderr[-3000:]
    assert all(re.search(r"\| (PASS|SHORT|) \|$", row) for row in rows[1:]), out
    assert list(tmp_path.iterdir()) == []  # every bench removed its directory
