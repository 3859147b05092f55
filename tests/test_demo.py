"""`edge-alarm demo` as a user runs it: a real `python -m edge demo` subprocess, from an
empty directory, with its own $TMPDIR so that anything it leaves behind is seen."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from edge.demo_rig import TEMP_PREFIX
from edge.sms_text import FALLBACK_NOTE

from conftest import _child_env

DEMO_TIMEOUT_S = 60


def demo_env(tmpdir: Path) -> dict:
    env = _child_env()
    env["TMPDIR"] = str(tmpdir)
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def demo_entries() -> set[str]:
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith(TEMP_PREFIX)}


def sms_boxes(out: str) -> list[tuple[str, str]]:
    """(heading, text) of every SMS the timeline shows as a phone would, wrapped lines
    joined again."""
    boxes = []
    for heading, body in re.findall(r"┌─ (.*?) ─+\n((?:  │ .*\n)+)  └", out):
        boxes.append((heading, "".join(line[4:] for line in body.splitlines())))
    return boxes


def test_demo_plays_the_whole_story_and_leaves_nothing(tmp_path, short_dir):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    before = demo_entries()
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "edge", "demo"], cwd=cwd,
                            env=demo_env(short_dir), capture_output=True,
                            stdin=subprocess.DEVNULL, timeout=DEMO_TIMEOUT_S)
    elapsed = time.monotonic() - started
    out = result.stdout.decode("utf-8")
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 0, out + err
    assert elapsed < DEMO_TIMEOUT_S

    # The scenes, in order, each with what the daemon did.
    scenes = ["① 07:40", "② 21:10", "③ 21:12", "④ 21:12", "⑤ 21:13", "⑥ 21:17", "小结 summary"]
    positions = [out.index(scene) for scene in scenes]
    assert positions == sorted(positions)
    one, two, three, four, five, six, summary = (
        out[a:b] for a, b in zip(positions, positions[1:] + [len(out)]))
    assert re.search(r"07:40:00  #\d+ gate_open .*↑ 平台已接收 uploaded", one)
    assert "gate_closed" in one
    assert re.search(r"21:10:00  #\d+ gate_after_hours .*↑ 平台已接收 uploaded", two)
    assert re.search(r"snapshot: 1280×720 JPEG, .*sha256 [0-9a-f]{12}…", two)
    assert "siren: ON" in three
    assert re.search(r"pre-trigger frames: [1-3] × 320×180", three)
    assert "电话 call: ATD+8613800138000;" in three  # escalation: nobody acknowledged
    # The guard's lamp: blinking until the alarm got through, then steady.
    assert three.index("闪烁 blinking") < three.index("常亮 steady")
    assert re.search(r"#\d+ acknowledged .*by principal via sms", four)
    assert re.search(r"#\d+ call .*escalation call: no answer", four)  # 收到 hung it up
    assert four.index("siren: still ON") < four.index("silenced") < four.index("siren: off")
    assert re.search(r"#\d+ silenced .*by principal via sms", four)
    assert re.search(r"#\d+ gate_held_open .*未上传 not uploaded", five)
    assert re.search(r"待上传 [2-9]\d* pending", five)
    assert "积压补传 backlog of" in six and "faults: 无 none" in six
    assert "✓ 演示完成" in summary

    # Each SMS as the principal's phone shows it, in the scene where it happened.
    boxes = sms_boxes(out)
    texts = [text for heading, text in boxes if "to principal +8613800138000" in heading]
    assert "【高山小学】非开放时段开门：校门 于 21:10:00 打开。" in texts
    assert ("【高山小学】紧急报警：门卫室一键报警 于 21:12:05 触发。"
            "回复“解除”关闭警号，回复“收到”表示已知悉（警号继续鸣响）。") in texts
    assert any(t.startswith("【高山小学】已记录您知悉1个报警，报警未解除") for t in texts)
    assert any(t.startswith("【高山小学】已解除1个报警，警号已关闭。") for t in texts)
    assert any(t.startswith("【高山小学】门未关闭：校门 于 21:15:00") and t.endswith(FALLBACK_NOTE)
               for t in texts)
    assert ("短信 SMS from principal +8613800138000", "收到") in boxes
    assert ("短信 SMS from principal +8613800138000", "解除") in boxes
    assert "紧急报警" in three and "已解除1个报警" in four
    assert any(text.endswith(FALLBACK_NOTE) for _, text in sms_boxes(five))

    # Nothing left behind: not in $TMPDIR, not in the system temp dir, not in the cwd.
    assert list(short_dir.iterdir()) == []
    assert demo_entries() == before
    assert list(cwd.iterdir()) == []


def test_ctrl_c_stops_the_demo_and_cleans_up(tmp_path, short_dir):
    proc = subprocess.Popen([sys.executable, "-m", "edge", "demo"], cwd=tmp_path,
                            env=demo_env(short_dir), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    lines: list[bytes] = []
    running = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if "①".encode() in line:  # the daemon, modem and platform are all up
                running.set()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert running.wait(30), b"".join(lines).decode("utf-8", "replace")
        assert len(list(short_dir.iterdir())) == 1  # the demo's one directory
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    assert "interrupted; cleaning up" in b"".join(lines).decode("utf-8")
    assert list(short_dir.iterdir()) == []
    assert list(tmp_path.iterdir()) == []
