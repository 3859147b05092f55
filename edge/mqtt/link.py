"""One connection to the fleet broker, over paho-mqtt (imported here, and only when [mqtt]
is configured: the daemon's memory on a Pi Zero matters).

MQTT 5 with clean_start false and a session that outlives the connection (a persistent
session); a Last Will that sets the device's retained status offline when the connection
dies without a goodbye. paho's network loop is run from the worker's own thread (paho's
external-loop interface: socket(), loop_read(), loop_write(), loop_misc()), so every
callback runs on that thread, between the worker's own steps, and no lock is needed.

A link is used for one connection and then dropped: paho keeps unacknowledged QoS 1
messages in memory and would send its copies again after a reconnect, but the event store
is what says what is owed, so a new connection starts from the store, with a new link.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
from typing import TYPE_CHECKING, Any, Protocol

from edge.config import Mqtt
from edge.errors import MqttError, MqttTlsError
from edge.secret_file import read_secret

if TYPE_CHECKING:
    import paho.mqtt.client as paho

log = logging.getLogger(__name__)

# The TCP connect and the TLS handshake, each; then the broker has this long for CONNACK.
CONNECT_TIMEOUT_S = 10.0
# A ping after this much silence; paho drops a link whose ping is not answered in as long.
KEEPALIVE_S = 30
# How long the broker keeps the session after the link is gone: a device may be off the
# network over a holiday.
SESSION_EXPIRY_S = 14 * 24 * 3600
QOS = 1
# The longest packet taken from the broker: what it owes us (CONNACK, PUBACK, PINGRESP,
# DISCONNECT) is a few bytes and its reason strings. We subscribe to nothing, so it owes
# us no PUBLISH either.
MAX_PACKET_BYTES = 64 * 1024
PUBLISH = 0x30  # the packet type, in the high nibble of the first byte


class LinkListener(Protocol):
    """What the link tells its worker, on the worker's thread, from inside serve()."""

    def connack(self, refused: str | None) -> None:
        """The broker took the session (``refused`` None) or refused it (why)."""

    def puback(self, mid: int, refused: str | None) -> None:
        """The broker has message ``mid`` (``refused`` None), or refused it (MQTT 5 PUBACK
        reason code 0x80 and up: not authorized, quota exceeded…)."""

    def lost(self, why: str, was_connected: bool) -> None:
        """The connection is gone; ``was_connected``: after a CONNACK that took it."""


class Bell:
    """Wakes a worker that waits in select(): a byte on a socket pair."""

    def __init__(self) -> None:
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)

    def ring(self) -> None:
        try:
            self._write.send(b"\0")
        except OSError:  # full (it rang already) or closed (the worker has stopped)
            pass

    def fileno(self) -> int:
        return self._read.fileno()

    def quiet(self) -> None:
        try:
            while self._read.recv(4096):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self._read.close()
        self._write.close()


class MqttLink:
    """One connection: open() connects (blocking, bounded), serve() runs the network for
    a while, publish() queues a message, close() ends it."""

    def __init__(self, settings: Mqtt, client_id: str, password: str | None,
                 will: tuple[str, bytes] | None, listener: LinkListener):
        import paho.mqtt.client as paho
        from paho.mqtt.properties import Properties
        from paho.mqtt.packettypes import PacketTypes

        self._settings = settings
        self._listener = listener
        self.connected = False
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=paho.MQTTv5)
        client.connect_timeout = CONNECT_TIMEOUT_S
        client.max_inflight_messages = 0  # the worker bounds what is in flight
        if settings.username is not None:
            client.username_pw_set(settings.username, password)
        if will is not None:  # (topic, payload): retained, published by the broker
            client.will_set(*will, qos=QOS, retain=True)
        if settings.tls:
            client.tls_set_context(_tls_context(settings))
        _bound_reads(client)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.on_disconnect = self._on_disconnect
        self._client: paho.Client = client
        self._connect_properties = Properties(PacketTypes.CONNECT)
        self._connect_properties.SessionExpiryInterval = SESSION_EXPIRY_S
        self._connect_properties.MaximumPacketSize = MAX_PACKET_BYTES

    def open(self) -> None:
        """Connect and send CONNECT; the CONNACK comes through serve(). MqttError when
        the broker cannot be reached, MqttTlsError when TLS fails (an untrusted
        certificate)."""
        try:
            self._client.connect(self._settings.host, self._settings.port,
                                 keepalive=KEEPALIVE_S, clean_start=False,
                                 properties=self._connect_properties)
        except ssl.SSLCertVerificationError as e:
            raise MqttTlsError(f"TLS: {e.verify_message or e.reason}") from None
        except ssl.SSLError as e:
            raise MqttTlsError(f"TLS: {e.reason or e}") from None
        except (OSError, ValueError) as e:  # refused, unreachable, timeout, no such host
            raise MqttError(f"{self._settings.host}:{self._settings.port}: "
                            f"{getattr(e, 'strerror', None) or e}") from None

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        """Queue ``payload`` at QoS 1; its message id, acknowledged through puback()."""
        return self._client.publish(topic, payload, qos=QOS, retain=retain).mid

    def serve(self, timeout: float, bell: Bell) -> None:
        """Run the network for up to ``timeout`` seconds, or until ``bell`` rings or
        something arrives: reads, writes, pings; the listener hears what happened."""
        sock = self._client.socket()
        if sock is None:
            return
        if getattr(sock, "pending", lambda: 0)() > 0:  # TLS bytes already decrypted
            timeout = 0.0
        reading: list[Any] = [sock, bell]
        writing: list[Any] = [sock] if self._client.want_write() else []
        try:
            readable, writable, _ = select.select(reading, writing, [], max(0.0, timeout))
        except (OSError, ValueError):  # the socket closed under us
            readable, writable = [sock], []
        if bell in readable:
            bell.quiet()
        if sock in readable or getattr(sock, "pending", lambda: 0)() > 0:
            self._client.loop_read()
        if self._client.socket() is not None and (sock in writable
                                                  or self._client.want_write()):
            self._client.loop_write()
        if self._client.socket() is not None:
            self._client.loop_misc()

    def close(self, *, goodbye: bool) -> None:
        """End the connection. ``goodbye``: with DISCONNECT, so the broker drops the Last
        Will; without, the broker sees the link die and publishes it."""
        self.connected = False
        sock = self._client.socket()
        if sock is None:
            return
        if goodbye:
            self._client.disconnect()  # written at once: the loop is ours, not a thread's
        sock.close()

    # ------------------------------------------------------------------ paho callbacks

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        self.connected = not reason.is_failure
        self._listener.connack(str(reason) if reason.is_failure else None)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        self._listener.puback(mid, str(reason) if reason.is_failure else None)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        was_connected, self.connected = self.connected, False
        self._listener.lost(str(reason), was_connected)


def read_password(settings: Mqtt) -> str | None:
    """The password_file's first line (never shown), None without one; SecretFileError
    when the file cannot be used. Read for every connection: a corrected file needs no
    restart."""
    if settings.password_file is None:
        return None
    return read_secret(str(settings.password_file), "password")


def _bound_reads(client: paho.Client) -> None:
    """paho reads a packet of whatever length the broker announces (up to 256 MiB) into
    memory, each read as long as what is left, and keeps every QoS 2 PUBLISH until its
    PUBREL: a hostile broker, or a stranger on an mqtt:// path, could take a Pi's memory.
    A packet beyond MAX_PACKET_BYTES (which CONNECT asks an honest broker to keep to), or
    any PUBLISH, drops the connection, as lost; each read is capped. (paho has no public
    hook for this: its one reading method is wrapped.)"""
    recv = client._sock_recv

    def bounded_recv(bufsize: int) -> bytes:
        packet = client._in_packet
        why = ("a packet of more than %d bytes" % MAX_PACKET_BYTES
               if packet["remaining_length"] > MAX_PACKET_BYTES else
               "a PUBLISH, to a client that subscribes to nothing"
               if packet["command"] & 0xF0 == PUBLISH else None)
        if why is not None:
            log.warning("mqtt: the broker sent %s; dropping the connection", why)
            raise ConnectionError(why)
        return recv(min(bufsize, MAX_PACKET_BYTES))

    client._sock_recv = bounded_recv  # type: ignore[method-assign]


def _tls_context(settings: Mqtt) -> ssl.SSLContext:
    """Verification always on: the broker's certificate must chain to ca_file and name
    the url's host."""
    try:
        return ssl.create_default_context(cafile=str(settings.ca_file))
    except (OSError, ssl.SSLError) as e:
        raise MqttError(f"CA file {settings.ca_file}: {getattr(e, 'strerror', None) or e}") \
            from None
