"""python -m edge.make_configs: per-school configs from one template and a CSV (README,
"Fifty devices"), run as the technician runs it, with the venv's Python."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edge import config

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "edge" / "config.example.toml"

# The county's template: the shipped one with the school's own values as ${columns}, as
# the README's fleet section tells to write it.
COLUMNS = {
    'name = "change-me"': 'name = "${school}"',
    'device_id = "change-me"': 'device_id = "${device_id}"',
    '"+86138XXXXXXXX"': '"${principal_phone}"',
    "https://platform.example.cn/api/v1/events": "https://platform.county.edu.cn/api/v1/events",
}
SCHOOLS = """\
device_id,school,principal_phone
gaoshan-gate-1,高山小学,+8613800138000
lishan-gate-1,"栗山""中心""小学",13912345678
"""


def fleet_template(tmp_path: Path) -> Path:
    text = EXAMPLE.read_text(encoding="utf-8")
    for old, new in COLUMNS.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "fleet.toml.in"
    path.write_text(text, encoding="utf-8")
    return path


def make_configs(tmp_path: Path, schools: str) -> subprocess.CompletedProcess:
    (tmp_path / "schools.csv").write_text(schools, encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "edge.make_configs",
                           str(fleet_template(tmp_path)),
                           str(tmp_path / "schools.csv"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=60)


def test_one_valid_config_per_school(tmp_path):
    result = make_configs(tmp_path, SCHOOLS)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["gaoshan-gate-1.toml", "lishan-gate-1.toml"]
    lishan = config.load(str(out / "lishan-gate-1.toml"))
    assert (lishan.site.device_id, lishan.site.name) == ("lishan-gate-1", '栗山"中心"小学')
    assert lishan.contacts[0].phone == "13912345678"
    assert config.load(str(out / "gaoshan-gate-1.toml")).site.name == "高山小学"


def test_a_row_that_gives_a_refused_config_writes_nothing(tmp_path):
    result = make_configs(tmp_path, SCHOOLS + "shuangxi-gate-1,双溪小学,+86139XXXXXXXX\n")
    assert result.returncode == 78
    assert result.stderr == (
        f"config error: {tmp_path / 'out' / 'shuangxi-gate-1.toml'}: [[contact]] "
        "principal.phone: '+86139XXXXXXXX' is the template's placeholder: edit it to the "
        "contact's number\n")
    assert not (tmp_path / "out").exists()


def test_a_device_id_used_twice_or_a_missing_column_is_refused(tmp_path):
    twice = make_configs(tmp_path, SCHOOLS + "gaoshan-gate-1,高山小学,+8613800138001\n")
    assert twice.returncode == 1 and "schools.csv:4: device_id 'gaoshan-gate-1' is used twice" in (
        twice.stderr)
    missing = make_configs(tmp_path, "device_id,school\ngaoshan-gate-1,高山小学\n")
    assert missing.returncode == 1
    assert "the template's ${principal_phone} is no CSV column" in missing.stderr
    assert not (tmp_path / "out").exists()
