"""Per-school edge-alarm configs from one template and a CSV, for a fleet.

    python -m edge.make_configs TEMPLATE SCHOOLS.csv OUTDIR

TEMPLATE is a config.toml in which what differs between schools is written ${column}
inside TOML strings (device_id = "${device_id}", phone = "${principal_phone}"). The CSV's
header names the columns; it needs a device_id column, unique per row. Each row becomes
OUTDIR/{device_id}.toml. Every config is checked as `edge-alarm check` reads it (run this
with /opt/edge-alarm/venv/bin/python or a checkout's .venv/bin/python); nothing is written
unless every row gives a valid config.
Exit status: 0 written; 1 a problem with the template or the CSV; 78 a config refused.
"""

from __future__ import annotations

import csv
import re
import string
import sys
import tomllib
from pathlib import Path

from edge import config
from edge.errors import ConfigError

EXIT_INPUT, EXIT_CONFIG = 1, 78
# As [site] device_id allows; it names the file, so it is checked before any path is made.
DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def toml_string_content(value: str) -> str:
    """A value as it may stand between the double quotes of a TOML basic string."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def render(template: string.Template, row: dict[str, str], where: str) -> str:
    try:
        return template.substitute({k: toml_string_content(v) for k, v in row.items()})
    except KeyError as e:
        raise ValueError(f"{where}: the template's ${{{e.args[0]}}} is no CSV column") from None
    except ValueError as e:
        raise ValueError(f"{where}: the template has a bad placeholder: {e}") from None


def config_problems(text: str, path: Path) -> list[str]:
    """edge-alarm's own config error lines for this text."""
    try:
        config.parse(tomllib.loads(text), str(path))
    except tomllib.TOMLDecodeError as e:
        return [f"config error: {path}: not valid TOML: {e}"]
    except ConfigError as e:
        return e.problems
    return []


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return EXIT_INPUT
    template_path, csv_path, out_dir = Path(argv[0]), Path(argv[1]), Path(argv[2])
    template = string.Template(template_path.read_text(encoding="utf-8"))
    with open(csv_path, newline="", encoding="utf-8-sig") as f:  # Excel writes a BOM
        rows = list(csv.DictReader(f))
    configs: dict[Path, str] = {}
    problems: list[str] = []
    try:
        for line, row in enumerate(rows, 2):
            where = f"{csv_path}:{line}"
            device_id = (row.get("device_id") or "").strip()
            if None in row or None in row.values():
                raise ValueError(f"{where}: needs as many fields as the header")
            if not DEVICE_ID.fullmatch(device_id):
                raise ValueError(f"{where}: device_id {device_id!r} must be 1-64 of A-Z, "
                                 "a-z, 0-9, '.', '_' or '-'")
            path = out_dir / f"{device_id}.toml"
            if path in configs:
                raise ValueError(f"{where}: device_id {device_id!r} is used twice")
            configs[path] = render(template, row, where)
            problems += config_problems(configs[path], path)
    except ValueError as e:
        print(f"make-configs: {e}", file=sys.stderr)
        return EXIT_INPUT
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return EXIT_CONFIG
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, text in configs.items():
        path.write_text(text, encoding="utf-8")
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
