"""The TOML configuration: parsed into frozen dataclasses, every problem found at once.

Each problem is one line naming the file, the table and the key, as installers read them:
``config error: config.toml: [[gate]] main_gate.pin: pin 17 is already used by
[[panic_button]] guard_room``. Nothing is created on disk before the whole file is accepted.

table.py collects the problems (pins claimed included) and holds RANGES; section.py reads
a section dataclass from its table; sections.py and inputs.py are the sections; checks.py
checks single values; loader.py reads the file, each table by the Config field of its name.
"""

from edge.config.checks import phone_problem
from edge.config.inputs import (DAY_NAMES, INPUT_KINDS, POWER_SIGNALS, Input, InputKind,
                                TimeRange, parse_time_range)
from edge.config.loader import DEFAULT_PATH, Config, default_config_path, load, parse
from edge.config.sections import (CAMERA_BACKENDS, DEFAULT_SOCKET, LOW_SPACE_CLEAR_SHARE,
                                  PIN_FACTORIES, TEMPLATE_FIELDS, Camera, Contact, Control,
                                  Drill, Escalation, Gpio, Indicator, Modem, Mqtt, Sia, Siren,
                                  Site, Sms, Storage, Summary, Uplink, Walktest, Web)
from edge.config.table import PLACEHOLDER, RANGES
from edge.errors import ConfigError
from edge.kinds import DEFAULT_IMMEDIATE, RECEIVABLE_KINDS

__all__ = [
    "CAMERA_BACKENDS", "DAY_NAMES", "DEFAULT_IMMEDIATE", "DEFAULT_PATH", "DEFAULT_SOCKET",
    "INPUT_KINDS", "LOW_SPACE_CLEAR_SHARE", "PIN_FACTORIES", "PLACEHOLDER", "POWER_SIGNALS",
    "RANGES", "RECEIVABLE_KINDS", "TEMPLATE_FIELDS", "Camera", "Config", "ConfigError",
    "Contact", "Control", "Drill", "Escalation", "Gpio", "Indicator", "Input", "InputKind",
    "Modem", "Mqtt", "Sia", "Siren", "Site", "Sms", "Storage", "Summary", "TimeRange",
    "Uplink", "Walktest", "Web", "default_config_path", "load", "parse", "parse_time_range",
    "phone_problem",
]
