"""What the daemon costs while nothing happens, measured on a real `edge-alarm run` process:
its time from exec to READY=1, its CPU and its storage writes over an idle window, its
fsyncs, and its memory.

    .venv/bin/python bench/bench_idle.py [--idle-s 60] [--starts 5] [--dir DIR]

The daemon runs a school's configuration on gpiozero's mock pins: four inputs armed (two
panic buttons, the gate, the tamper switch), the siren, the test-pattern camera with its
pre-trigger ring on (one frame a second), the modem on the emulator of edge.sim.modem (a
real pty), the platform stand-in of edge.sim.platform on 127.0.0.1, one SMS contact, and the
shipped heartbeat_s (300 s): the default window is that long, so it holds one heartbeat
and the writes scaled to an hour are those of a real hour (a shorter window holds none,
and says too little; a faster heartbeat says too much).

Start → READY: from just before the exec to the READY=1 datagram the daemon sends to
$NOTIFY_SOCKET (a unix datagram socket of the bench's, as systemd's would be); the worst of
--starts starts, each of a fresh process on the same store.

Idle: once the daemon is ready and has done the start's own work (--settle-s: its modem
answered, the first heartbeat accepted, the camera ring full, and a minute in, the first
retention purge, which then runs once an hour), utime+stime from /proc/<pid>/stat and write_bytes from
/proc/<pid>/io of the daemon and its camera process (edge.camera.serve, its child) are read
at the start and the end of the window: CPU in % of one core, and the bytes they made the
kernel write to storage, scaled to an hour (the wear of an SD card). Its log goes to a pipe, as to journald. fsyncs and fdatasyncs are counted with
`strace --seccomp-bpf` (which stops the daemon only at those two calls) when strace is
installed. VmRSS of the daemon and of its camera process at the end of the window, for
information (the test pattern's camera process draws with Pillow and a CJK font that a
Pi's does not load).

Memory on a Pi: a second daemon runs the same school with `backend = "picamera2"` and a
stand-in `picamera2` module on its PYTHONPATH (bench/stand_in/picamera2.py), read after
--settle-s. The target (40 MiB) is the daemon's VmHWM: the process that sounds the siren.
Its camera process runs the picamera2 backend, its pre-trigger ring and JPEG encoding
(Pillow), all counted, only picamera2's own import (numpy, libcamera) costing nothing: not
ours to shrink. Shown beside it: that process's VmRSS and VmHWM, and the two together
(from /proc/<pid>/smaps: anonymous memory summed, the pages of each file both map, the
interpreter and its libraries, counted once): the memory the device gives the alarm and
its camera.

Exit status 0 when every target is met, 1 when one is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO

from _common import Figure, arg_parser, bench_main, work_dir

from edge.sim.modem import ModemEmulator
from edge.sim.platform import PlatformStub
from edge.sim.site import Contact, PanicButton, SimSite, write_token

EDGE_ALARM = Path(sys.executable).with_name("edge-alarm")
# A stand-in `picamera2` module: the daemon's picamera2 backend runs, picamera2 costs nothing.
PI_CAMERA = Path(__file__).resolve().parent / "stand_in"
TOKEN = "bench-token"
READY_TARGET_S = 1.0
CPU_TARGET_PERCENT = 0.5
WRITES_TARGET_BYTES_PER_H = 1024 * 1024
RSS_TARGET_BYTES = 40 * 1024 * 1024
HEARTBEAT_S = 300  # [uplink] heartbeat_s as shipped: the full window holds one heartbeat
START_WAIT_S = 20.0  # a daemon not ready in this long is a failure
# After READY, before the window: the start's own work (the modem's first answers, the first
# heartbeat, the camera ring filling, and a minute in, the first hourly retention purge).
SETTLE_S = 65.0
STOP_WAIT_S = 10.0
LOG_LINES_KEPT = 40
FSYNC_LINE = re.compile(r"^\d+\s+(\d+\.\d+)\s+(?:fsync|fdatasync)\(")


def site(root: Path, modem_port: str, platform_url: str, camera: str) -> SimSite:
    """The school: ``camera`` is [camera] backend ("test-pattern" or "picamera2")."""
    return SimSite(root / "var", socket=root / "control.sock", device_id="bench-idle",
                   panic_buttons=[PanicButton(), PanicButton("gate_box", "校门一键报警", 18)],
                   camera_pre_trigger_s=5, camera_keys={"backend": camera},
                   modem_port=modem_port, platform_url=platform_url,
                   token_file=write_token(root / "token", TOKEN),
                   uplink_keys={"heartbeat_s": HEARTBEAT_S},
                   contacts=[Contact("principal", "+8613800138000", ["panic", "tamper"])])


class NotifySocket:
    """$NOTIFY_SOCKET as systemd holds it: a unix datagram socket that learns the sender's
    pid from each datagram's credentials (the daemon may run under strace)."""

    def __init__(self, path: Path):
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._sock.bind(str(path))

    def wait_ready(self, timeout: float) -> tuple[float, int]:
        """(perf_counter when READY=1 came, the pid that sent it)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self._sock.settimeout(left)
            try:
                data, ancillary, _, _ = self._sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except TimeoutError:
                break
            at = time.perf_counter()
            if b"READY=1" in data.split(b"\n"):
                for level, kind, cred in ancillary:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                        return at, struct.unpack("3i", cred[:12])[0]
                raise RuntimeError("READY=1 came without the sender's credentials")
        raise RuntimeError(f"no READY=1 within {timeout:g} s")

    def close(self) -> None:
        self._sock.close()


class DaemonProcess:
    """`edge-alarm run` started with $NOTIFY_SOCKET, under ``wrapper`` (a command line put
    before it) if given, with ``python_path`` as $PYTHONPATH if given; its log kept in memory
    from a pipe."""

    def __init__(self, config: Path, notify: NotifySocket, wrapper: list[str] = (),
                 python_path: Path | None = None):
        env = dict(os.environ, NOTIFY_SOCKET=str(notify.path))
        if python_path is not None:
            env["PYTHONPATH"] = str(python_path)
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([*wrapper, str(EDGE_ALARM), "-c", str(config), "run"],
                                     env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.log: deque[str] = deque(maxlen=LOG_LINES_KEPT)
        self._reader = threading.Thread(target=self._read_log, args=(self.proc.stderr,),
                                        daemon=True)
        self._reader.start()
        self.pid = self.proc.pid  # until READY=1 names the daemon's own
        try:
            ready_at, self.pid = notify.wait_ready(START_WAIT_S)
        except RuntimeError:
            self.stop()
            raise RuntimeError("the daemon did not get ready; its log:\n" + "".join(self.log))
        self.ready_s = ready_at - self.started

    def _read_log(self, pipe: IO[bytes]) -> None:
        for line in pipe:
            self.log.append(line.decode(errors="replace"))

    def stop(self) -> None:
        """SIGTERM to the daemon itself (strace, signalled, would leave it running), then
        SIGKILL if it has not stopped in time; its wrapper ends with it."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            try:
                self.proc.wait(STOP_WAIT_S)
                break
            except subprocess.TimeoutExpired:
                continue
        self._reader.join(STOP_WAIT_S)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the daemon and its camera process)."""
    tree = [pid]
    for process in tree:
        with contextlib.suppress(FileNotFoundError):
            for task in Path(f"/proc/{process}/task").iterdir():
                tree += [int(child) for child in (task / "children").read_text().split()]
    return tree


def proc_file(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/{name}").read_text()


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of every thread of these processes so far."""
    total = 0
    for pid in pids:
        fields = proc_file(pid, "stat").rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def written_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        io = dict(line.split(": ") for line in proc_file(pid, "io").splitlines())
        total += int(io["write_bytes"])
    return total


def memory_kib(pid: int) -> dict[str, int]:
    return {key: int(value.split()[0])
            for key, value in (line.split(":", 1) for line in
                               proc_file(pid, "status").splitlines())
            if key in ("VmRSS", "VmHWM")}


def resident_kib_by_mapping(pid: int) -> dict[str, int]:
    """Resident KiB of each file ``pid`` maps (all its mappings of that file summed), and
    of its anonymous memory under "" (from /proc/<pid>/smaps)."""
    resident: dict[str, int] = {}
    name = ""
    for line in proc_file(pid, "smaps").splitlines():
        head = line.split()
        if head and "-" in head[0] and not head[0].endswith(":"):  # a mapping's first line
            name = head[5] if len(head) > 5 and head[5].startswith("/") else ""
        elif head and head[0] == "Rss:":
            resident[name] = resident.get(name, 0) + int(head[1])
    return resident


def together_kib(pids: list[int]) -> int:
    """The memory of these processes together, each file's pages counted once (the
    interpreter and libraries both map), anonymous memory summed. Unlike Pss it does not
    depend on what else the machine runs."""
    files: dict[str, int] = {}
    anonymous = 0
    for pid in pids:
        for name, kib in resident_kib_by_mapping(pid).items():
            if name:
                files[name] = max(files.get(name, 0), kib)
            else:
                anonymous += kib
    return anonymous + sum(files.values())


def processes_memory(daemon: DaemonProcess) -> dict[str, dict[str, int]]:
    """memory_kib of the daemon and of its camera process (its one child)."""
    tree = process_tree(daemon.pid)
    if len(tree) != 2:
        raise RuntimeError(f"expected the daemon and its camera process, found pids {tree}")
    return {"daemon": memory_kib(tree[0]), "camera": memory_kib(tree[1]),
            "together": {"kib": together_kib(tree)}}


def fsyncs_between(trace: Path, start: float, end: float) -> int:
    """fsync and fdatasync calls that strace -ttt logged between two time.time() values."""
    with open(trace, errors="replace") as lines:
        return sum(1 for line in lines
                   if (m := FSYNC_LINE.match(line)) and start <= float(m.group(1)) <= end)


def start_times(config: Path, notify: NotifySocket, starts: int) -> list[float]:
    times = []
    for _ in range(starts):
        daemon = DaemonProcess(config, notify)
        times.append(daemon.ready_s)
        daemon.stop()
    return times


def idle(config: Path, notify: NotifySocket, idle_s: float, settle_s: float,
         trace: Path | None) -> dict:
    wrapper = [] if trace is None else [
        "strace", "-f", "-qq", "-ttt", "--seccomp-bpf", "-e", "trace=fsync,fdatasync",
        "-e", "signal=none", "-o", str(trace)]
    daemon = DaemonProcess(config, notify, wrapper)
    try:
        time.sleep(settle_s)
        tree = process_tree(daemon.pid)
        cpu0, written0, wall0, t0 = (cpu_seconds(tree), written_bytes(tree),
                                     time.time(), time.perf_counter())
        time.sleep(idle_s)
        cpu1, written1, wall1, t1 = (cpu_seconds(tree), written_bytes(tree),
                                     time.time(), time.perf_counter())
        if daemon.proc.poll() is not None or process_tree(daemon.pid) != tree:
            raise RuntimeError("the daemon or its camera process stopped while idle; its "
                               "log:\n" + "".join(daemon.log))
        memory = processes_memory(daemon)
    finally:
        daemon.stop()
    elapsed = t1 - t0
    return {"cpu_percent": (cpu1 - cpu0) / elapsed * 100,
            "bytes_per_h": (written1 - written0) / elapsed * 3600,
            "fsyncs_per_h": None if trace is None
            else fsyncs_between(trace, wall0, wall1) / elapsed * 3600,
            "memory": memory, "idle_s": elapsed}


def pi_memory(config: Path, notify: NotifySocket,
              settle_s: float) -> dict[str, dict[str, int]]:
    """processes_memory with the picamera2 backend on PI_CAMERA (the stand-in of
    bench/stand_in), once the daemon has done the start's own work."""
    daemon = DaemonProcess(config, notify, python_path=PI_CAMERA)
    try:
        time.sleep(settle_s)
        if daemon.proc.poll() is not None:
            raise RuntimeError("the daemon stopped; its log:\n" + "".join(daemon.log))
        return processes_memory(daemon)
    finally:
        daemon.stop()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = arg_parser(__doc__)
    parser.add_argument("--idle-s", type=float, default=HEARTBEAT_S,
                        help=f"the idle window, in seconds (default {HEARTBEAT_S}: one "
                             "heartbeat interval, so that it holds one heartbeat)")
    parser.add_argument("--settle-s", type=float, default=SETTLE_S,
                        help=f"from READY to the window, in seconds (default {SETTLE_S:g}: "
                             "the start's own work done)")
    parser.add_argument("--starts", type=int, default=5,
                        help="starts timed to READY=1 (default 5)")
    args = parser.parse_args(argv)
    if args.idle_s <= 0 or args.settle_s < 0 or args.starts < 1:
        parser.error("--idle-s must be positive, --settle-s not negative and --starts at "
                     "least 1")
    return args


def run(args: argparse.Namespace) -> list[Figure]:
    with work_dir(args.dir, "bench-idle-") as root, ModemEmulator() as emulator, \
            PlatformStub(token=TOKEN) as platform:
        config = site(root, emulator.port, platform.url, "test-pattern").write(
            root / "config.toml")
        pi_config = site(root, emulator.port, platform.url, "picamera2").write(
            root / "pi.toml")
        notify = NotifySocket(root / "notify.sock")
        try:
            ready = start_times(config, notify, args.starts)
            trace = root / "fsyncs.strace" if shutil.which("strace") else None
            quiet = idle(config, notify, args.idle_s, args.settle_s, trace)
            pi = pi_memory(pi_config, notify, args.settle_s)
        finally:
            notify.close()
    fsyncs = quiet["fsyncs_per_h"]
    mib = 1024 * 1024
    return [
        Figure(f"start → READY=1, worst of {len(ready)}", f"{max(ready) * 1000:.0f} ms",
               f"≤ {READY_TARGET_S:g} s", max(ready) <= READY_TARGET_S),
        Figure(f"idle CPU over {quiet['idle_s']:.0f} s (4 inputs, camera ring, modem, uplink)",
               f"{quiet['cpu_percent']:.2f} % of one core", f"≤ {CPU_TARGET_PERCENT:g} %",
               quiet["cpu_percent"] <= CPU_TARGET_PERCENT),
        Figure(f"idle storage writes (a heartbeat every {HEARTBEAT_S} s)",
               f"{quiet['bytes_per_h'] / mib:.2f} MiB/h", "≤ 1 MiB/h",
               quiet["bytes_per_h"] <= WRITES_TARGET_BYTES_PER_H),
        Figure("idle fsync + fdatasync calls",
               "strace not installed" if fsyncs is None else f"{fsyncs:.0f} per hour"),
        Figure("RSS of the daemon on a Pi (VmRSS; VmHWM)",
               f"{pi['daemon']['VmRSS'] / 1024:.1f} MiB; {pi['daemon']['VmHWM'] / 1024:.1f} MiB",
               "≤ 40 MiB", pi["daemon"]["VmHWM"] * 1024 <= RSS_TARGET_BYTES),
        Figure("RSS of its camera process on a Pi, picamera2's own import left out",
               f"{pi['camera']['VmRSS'] / 1024:.1f} MiB; {pi['camera']['VmHWM'] / 1024:.1f} MiB"),
        Figure("both on a Pi, each file's pages counted once",
               f"{pi['together']['kib'] / 1024:.1f} MiB"),
        Figure("RSS of the idle daemon; its test-pattern camera process",
               f"{quiet['memory']['daemon']['VmRSS'] / 1024:.1f} MiB; "
               f"{quiet['memory']['camera']['VmRSS'] / 1024:.1f} MiB"),
    ]


if __name__ == "__main__":
    sys.exit(bench_main(parse, run))
