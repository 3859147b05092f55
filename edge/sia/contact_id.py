"""Our event kinds as Ademco Contact ID (ADM-CID) events: ``Q XYZ GG CCC``, qualifier
(1 new event, 3 restore), the three-digit code, the partition and the zone.

The zone of an input is 100 + its BCM pin (the guard room's button on GPIO17 is zone
117): stable however the config is reordered, since each pin is used once, and read off
the wiring by whoever fills in the alarm centre's zone list. The device's own parts
(modem, platform link, storage…) report on zone 000. The README has the whole table.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.config import Config
from edge.events import Event

NEW, RESTORE = 1, 3
PARTITION = 1  # one school gate, one partition
SYSTEM_ZONE = 0
INPUT_ZONE_BASE = 100

# kind → (qualifier, code); the zone is the subject's.
KIND_CODES: dict[str, tuple[int, int]] = {
    "panic": (NEW, 120),             # panic
    "tamper": (NEW, 137),            # tamper
    "gate_after_hours": (NEW, 131),  # perimeter burglary: the gate opened out of hours
    "gate_held_open": (NEW, 426),    # access: door propped open
    "silenced": (NEW, 406),          # cancel: the alarm was silenced at the school
    "power_lost": (NEW, 301),        # AC loss
    "power_restored": (RESTORE, 301),
    "battery_low": (NEW, 302),       # low system battery
    "heartbeat": (NEW, 602),         # periodic test report
    "drill": (NEW, 601),             # manual trigger test report
    "input_tested": (NEW, 611),      # walk test: point tested OK
}
# Kinds with no Contact ID code an alarm centre acts on: never sent (gate openings in
# hours are the platform's log; a remote acknowledgement, a refused SMS command and an
# escalation call are the device's own business).
NOT_SENT = frozenset({"gate_open", "gate_closed", "acknowledged", "sms_refused", "call"})

# A part's fault (qualifier 1) and recovery (qualifier 3), on the system zone.
SYSTEM_TROUBLE = 300
PART_CODES = {
    "modem": 351,      # telco 1 fault: the SMS/voice path
    "uplink": 350,     # communication trouble: the platform
    "mqtt": 350,
    "sia": 354,        # failure to communicate event (sent once the link is back)
    "storage": 300,    # system trouble
    "control": 300,
    "clock": 626,      # time/date inaccurate
    "camera": 330,     # system peripheral trouble
    "indicator": 330,
    "siren": 321,      # bell 1
}
# An input that cannot be armed: a panic zone's trouble, or any other sensor's.
PANIC_ZONE_TROUBLE, SENSOR_TROUBLE = 375, 380


@dataclass(frozen=True)
class ContactId:
    qualifier: int
    code: int
    zone: int
    partition: int = PARTITION

    def data(self, account: str) -> str:
        """The ADM-CID message data, up to and with its closing bracket."""
        return (f"#{account.upper()}|{self.qualifier}{self.code:03d} "
                f"{self.partition:02d} {self.zone:03d}]")


def contact_id(event: Event, cfg: Config) -> ContactId | None:
    """What ``event`` is to an alarm centre; None for a kind that is not sent."""
    if event.kind in ("fault", "recovered"):
        qualifier = NEW if event.kind == "fault" else RESTORE
        inp = cfg.input(event.subject)
        if inp is not None:
            code = PANIC_ZONE_TROUBLE if inp.kind == "panic" else SENSOR_TROUBLE
            return ContactId(qualifier, code, zone_of(event.subject, cfg))
        return ContactId(qualifier, PART_CODES.get(event.subject, SYSTEM_TROUBLE),
                         SYSTEM_ZONE)
    if event.kind not in KIND_CODES:
        return None
    qualifier, code = KIND_CODES[event.kind]
    return ContactId(qualifier, code, zone_of(event.subject, cfg))


def zone_of(subject: str, cfg: Config) -> int:
    """An input's zone (100 + its BCM pin); the system zone for anything else (the
    heartbeat's device, an input no longer in the config)."""
    inp = cfg.input(subject)
    return INPUT_ZONE_BASE + inp.pin if inp is not None else SYSTEM_ZONE
