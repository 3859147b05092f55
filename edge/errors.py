"""The exceptions of edge-alarm. Each also derives from the builtin it resembles, so
callers that know nothing of edge-alarm can still catch it (gpiozero's habit)."""


class EdgeAlarmError(Exception):
    """Base of every edge-alarm error."""


class ConfigError(EdgeAlarmError, ValueError):
    """The configuration is refused. ``problems`` holds one line per problem."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class StorageError(EdgeAlarmError, OSError):
    """The event store cannot be written or read."""


class DaemonUnreachable(EdgeAlarmError, ConnectionError):
    """No daemon answers on the control socket."""


class CommandRefused(EdgeAlarmError, ValueError):
    """The daemon understood a control command and refused it (unknown input, not simulated…)."""


class ModemError(EdgeAlarmError, OSError):
    """The modem did not do what was asked: a timeout, an ERROR, a lost port."""


class UplinkError(EdgeAlarmError, OSError):
    """The platform could not be reached or refused a request."""


class SecretFileError(EdgeAlarmError, OSError):
    """A file that holds a secret (the platform token, the broker password) cannot be used."""


class MqttError(EdgeAlarmError, OSError):
    """The broker could not be reached, or refused the device."""


class MqttTlsError(MqttError):
    """The broker's TLS failed: its certificate did not verify, or the handshake broke."""


class CameraError(EdgeAlarmError, OSError):
    """The camera could not start or capture."""


class SiaError(EdgeAlarmError, OSError):
    """The alarm receiving centre could not be reached over SIA DC-09, or answered
    nothing we could take; or the SIA key file is unusable."""
