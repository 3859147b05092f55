"""`edge-alarm` (and `python -m edge`): argument parsing only; each command calls one
function elsewhere. Exit statuses are part of the interface (spec §1)."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from typing import Any

from edge import config as config_mod
from edge.errors import CommandRefused, ConfigError, DaemonUnreachable, EdgeAlarmError
from edge.safe_text import SafeFormatter, safe_text

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REFUSED = 2
EXIT_NO_DAEMON = 3
EXIT_CONFIG = 78  # EX_CONFIG, sysexits.h


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", default=argparse.SUPPRESS, metavar="PATH",
                        help="config file (default: $EDGE_ALARM_CONFIG, else "
                             f"{config_mod.DEFAULT_PATH})")
    p = argparse.ArgumentParser(prog="edge-alarm", parents=[common],
                                description="School gate and one-key panic alarm.")
    p.add_argument("--version", action=_PrintVersion)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("run", parents=[common], help="the daemon, in the foreground")
    sub.add_parser("demo", parents=[common], help="a simulated school gate, start to end")
    sub.add_parser("check", parents=[common], help="validate the config, probe every part")
    s = sub.add_parser("status", parents=[common], help="ask the running daemon")
    s.add_argument("--json", action="store_true")
    e = sub.add_parser("events", parents=[common], help="the event log, oldest first")
    e.add_argument("--since", metavar="WHEN",
                   help="ISO-8601 time, 'today', or a duration such as 24h or 7d")
    e.add_argument("--kind", metavar="KIND")
    fmt = e.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    s = sub.add_parser("sim", parents=[common], help="drive a simulated input")
    s.add_argument("input")
    s.add_argument("state", choices=["on", "off"])
    s = sub.add_parser("silence", parents=[common], help="silence and acknowledge the alarm")
    s.add_argument("--by", metavar="NAME", default=None)
    s = sub.add_parser("drill", parents=[common], help="drill mode: a panic press is a drill")
    s.add_argument("state", choices=["on", "off"])
    s.add_argument("--for", dest="for_", metavar="DURATION", default=None,
                   help="how long, e.g. 30m or 2h (default [drill] default_for_s)")
    s = sub.add_parser("walktest", parents=[common],
                       help="walk test (巡检): each input pressed is a test, not an alarm")
    s.add_argument("state", choices=["on", "off"])
    s.add_argument("--for", dest="for_", metavar="DURATION", default=None,
                   help="how long, e.g. 30m or 2h (default 30m)")
    s.add_argument("--by", metavar="NAME", default=None)
    sub.add_parser("web", parents=[common], help="the guard-room page ([web]), until stopped")
    s = sub.add_parser("report", parents=[common], help="the day's summary")
    s.add_argument("--day", metavar="YYYY-MM-DD", default=None)
    s.add_argument("--csv", action="store_true")
    s = sub.add_parser("test-sms", parents=[common], help="send one SMS through the modem")
    s.add_argument("number")
    s.add_argument("text", nargs="?")
    return p


class _PrintVersion(argparse.Action):
    """--version: the version is looked up only when asked, since importlib.metadata
    would stay in the daemon's memory (megabytes) for every `run`."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="show the program's version and exit", **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(f"edge-alarm {_version()}")
        parser.exit()


def _version() -> str:
    """The installed distribution's version (what pip installed), not a constant that
    could disagree with it."""
    import importlib.metadata
    try:
        return importlib.metadata.version("edge-alarm")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _load_for_this_card(path: str) -> config_mod.Config:
    """The config of `run` and `check`, refused (exit 78) when the store on this card
    was written by another device: a card cloned from another school's would report
    as this school with that school's history and numbering."""
    cfg = config_mod.load(path)
    from edge.store import device_of_store
    owner = device_of_store(cfg.storage.db_path)
    if owner is not None and owner != cfg.site.device_id:
        moved = f"{cfg.storage.path}.{owner}"
        raise ConfigError([
            f"config error: {cfg.path}: [site] device_id: {cfg.site.device_id!r}, but the "
            f"store {cfg.storage.db_path} belongs to {owner!r} (a card cloned from another "
            f"device?): move the store aside (sudo systemctl stop edge-alarm; sudo mv "
            f"{cfg.storage.path} {moved}), or set device_id back to {owner!r}"])
    return cfg


def main(argv: list[str] | None = None, *, start_signals=None) -> int:
    """``start_signals``: the run command's signal handlers, when the entry point
    installed them before importing this module (edge.entry)."""
    args = _parser().parse_args(argv)
    if args.command == "run":  # before the config is read: a SIGHUP now must not kill it
        from edge.start_signals import StartSignals
        args.start_signals = start_signals or StartSignals().install()
    if not hasattr(args, "config"):
        args.config = config_mod.default_config_path()
    command = args.command.replace("-", "_")
    try:
        return globals()[f"cmd_{command}"](args)
    except ConfigError as e:
        for line in e.problems:
            print(line, file=sys.stderr)
        return EXIT_CONFIG
    except DaemonUnreachable as e:
        print(f"edge-alarm: {safe_text(e)}", file=sys.stderr)
        return EXIT_NO_DAEMON
    except CommandRefused as e:
        print(f"edge-alarm: {safe_text(e)}", file=sys.stderr)
        return EXIT_REFUSED
    except EdgeAlarmError as e:
        print(f"edge-alarm: {safe_text(e)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _setup_logging(level: int = logging.INFO) -> None:
    # Under systemd the journal stamps each line itself.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    # One line per message, whatever a stranger's SMS or a modem's answer put in it.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter(fmt))
    logging.basicConfig(level=level, handlers=[handler])


def cmd_run(args) -> int:
    cfg = _load_for_this_card(args.config)
    _setup_logging()
    from edge.service import run_daemon
    return run_daemon(cfg, args.start_signals)


def cmd_demo(args) -> int:
    from edge.demo import run_demo
    return run_demo()


def cmd_check(args) -> int:
    cfg = _load_for_this_card(args.config)
    _setup_logging(logging.ERROR)  # check says what is wrong in its own lines
    from edge.check import run_check
    return run_check(cfg)


def cmd_status(args) -> int:
    from edge.control import request_status
    from edge.views import print_status

    cfg = config_mod.load(args.config)
    print_status(request_status(cfg.control.socket), as_json=args.json)
    return EXIT_OK


def cmd_events(args) -> int:
    from edge.views import print_events, read_events

    cfg = config_mod.load(args.config)
    fmt = "json" if args.json else "csv" if args.csv else "text"
    try:
        events = read_events(cfg, since=args.since, kind=args.kind)
    except ValueError as e:  # a --since or --kind that is none: a usage error, like argparse's
        print(f"edge-alarm: {safe_text(e)}", file=sys.stderr)
        return EXIT_REFUSED
    print_events(events, fmt)
    return EXIT_OK


def cmd_sim(args) -> int:
    from edge.control import request

    cfg = config_mod.load(args.config)
    request(cfg.control.socket, "sim", {"input": args.input, "state": args.state})
    print(f"{args.input} {args.state}")
    return EXIT_OK


def cmd_silence(args) -> int:
    from edge.control import request

    cfg = config_mod.load(args.config)
    # Who silenced is the accountability record: the --by name, else the person behind sudo,
    # else the account that ran the command.
    by = args.by or os.environ.get("SUDO_USER") or getpass.getuser()
    done = request(cfg.control.socket, "silence", {"by": by})
    if done:
        for event in done:
            print(f"silenced {event['subject']} ({event['data'].get('label')}) by {by}")
    else:
        print("no alarm was active; siren off")
    return EXIT_OK


def cmd_test_sms(args) -> int:
    from edge.sms_send import send_test_sms

    cfg = config_mod.load(args.config)
    _setup_logging(logging.WARNING)
    refs = send_test_sms(cfg, args.number, args.text)
    print(f"sent to {args.number} ({len(refs)} part(s), message reference(s) "
          f"{', '.join(map(str, refs))})")
    return EXIT_OK


def _for_s(args) -> int | None:
    """A timed mode's --for in seconds (None: its default)."""
    from edge.control import DRILL_FOR_RANGE_S
    from edge.views import parse_duration

    if args.for_ is None:
        return None
    for_s = parse_duration(args.for_)
    low, high = DRILL_FOR_RANGE_S
    if for_s is None or not low <= for_s <= high:
        raise CommandRefused(f"--for {args.for_!r}: use a duration from 1m to 24h, "
                             "such as 30m or 2h")
    return for_s


def cmd_drill(args) -> int:
    from edge.control import request

    cfg = config_mod.load(args.config)
    for_s = _for_s(args)
    result = request(cfg.control.socket, "drill", {"on": args.state == "on", "for_s": for_s})
    print(f"drill mode on until {result['until']}" if result["active"] else "drill mode off")
    return EXIT_OK


def cmd_walktest(args) -> int:
    from edge.control import request

    cfg = config_mod.load(args.config)
    for_s = _for_s(args)
    by = args.by or os.environ.get("SUDO_USER") or getpass.getuser()
    result = request(cfg.control.socket, "walktest",
                     {"on": args.state == "on", "for_s": for_s, "by": by})
    print(f"walk test on until {result['until']} (by {result['by']}): press each input"
          if result["active"] else "walk test off")
    return EXIT_OK


def cmd_web(args) -> int:
    cfg = config_mod.load(args.config)
    _setup_logging()
    from edge.web.server import run_web  # aiohttp: only this command needs it
    return run_web(cfg)


def cmd_report(args) -> int:
    import datetime as dt

    from edge.report import print_report
    from edge.views import FIRST_DAY, LAST_DAY

    cfg = config_mod.load(args.config)
    if args.day is None:
        day = dt.datetime.now(cfg.site.tz).date()
    else:
        try:
            day = dt.date.fromisoformat(args.day)
        except ValueError:
            raise CommandRefused(f"--day {args.day!r}: use YYYY-MM-DD") from None
        if not FIRST_DAY <= day <= LAST_DAY:
            raise CommandRefused(f"--day {args.day}: out of range ({FIRST_DAY} to "
                                 f"{LAST_DAY})")
    print_report(cfg, day, as_csv=args.csv)
    return EXIT_OK
