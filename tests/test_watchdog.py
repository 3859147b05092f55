"""The systemd watchdog: WATCHDOG=1 comes from the owner loop only, so a stalled loop
stops the pings and systemd restarts the daemon."""

from __future__ import annotations

import socket
import threading
import time

from gpiozero.pins.mock import MockFactory

from edge import config
from edge.daemon import Daemon
from edge.sdnotify import Notifier


def listen(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.05)
    messages: list[tuple[float, str]] = []
    stop = threading.Event()

    def receive():
        while not stop.is_set():
            try:
                messages.append((time.monotonic(), sock.recv(256).decode()))
            except socket.timeout:
                continue
    thread = threading.Thread(target=receive, daemon=True)
    thread.start()

    def close():
        stop.set()
        thread.join()
        sock.close()
    return messages, close


def test_pings_stop_while_the_owner_loop_is_stalled(write_config, short_dir, wait_until):
    messages, close = listen(short_dir / "notify")
    notifier = Notifier({"NOTIFY_SOCKET": str(short_dir / "notify"), "WATCHDOG_USEC": "200000"})
    daemon = Daemon(config.load(str(write_config())), pin_factory=MockFactory(),
                    notifier=notifier)
    runner = threading.Thread(target=daemon.run, daemon=True)
    runner.start()
    try:
        wait_until(lambda: sum(m == "WATCHDOG=1" for _, m in messages) >= 5, timeout=5,
                   what="periodic WATCHDOG=1")
        assert messages[0][1] == "READY=1"
        pings = [t for t, m in messages if m == "WATCHDOG=1"]
        assert max(b - a for a, b in zip(pings, pings[1:])) < 0.3  # every ~0.1 s

        stalls: list[float] = []

        def stall() -> None:  # the owner thread hangs (a stuck call)
            stalls.append(time.monotonic())
            time.sleep(1.5)
        daemon.loop.post(stall)
        wait_until(lambda: stalls, timeout=5, what="the owner loop stalled")
        stalled_at = stalls[0]  # when the owner began to hang, however busy the machine
        time.sleep(max(0.0, stalled_at + 1.7 - time.monotonic()))
        during = [t for t, m in messages if m == "WATCHDOG=1"
                  and stalled_at + 0.25 < t < stalled_at + 1.45]
        assert during == []  # systemd would see the silence and restart us
        wait_until(lambda: any(m == "WATCHDOG=1" and t > stalled_at + 1.5
                               for t, m in messages), timeout=2, what="pings after the stall")
    finally:
        daemon.request_stop()
        runner.join(5)
        daemon.close()
        time.sleep(0.1)
        close()
    assert messages[-1][1] == "STOPPING=1"
