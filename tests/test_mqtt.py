"""The MQTT uplink (edge/mqtt/) against a real Mosquitto broker that each test starts on a
loopback port: events as CloudEvents on their topics, the retained status and its Last
Will, a broker killed mid-flight, a broker down at start, a refused password, mqtts://.
Hostile brokers written here (garbage, huge packets, one that never acknowledges, one that
hangs up every time). And the [mqtt] config."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import socket
import ssl
import threading
import time
import tomllib
import tracemalloc
from pathlib import Path

import pytest

from conftest import (SHORT_MODEM_TIMINGS, cloudevent_problems, edge_cli, self_signed_cert,
                      start_daemon, stop_daemon)
from edge import config
from edge.config.sections import DEFAULT_SMS_FALLBACK_AFTER_S
from edge.mqtt.link import MAX_PACKET_BYTES, Bell, MqttLink
from edge.routing import MQTT
from edge.service import WorkerOptions
from edge.sim.broker import MOSQUITTO, Broker
from edge.sim.site import Contact, SimSite, start_site
from edge.store import Store

needs_mosquitto = pytest.mark.skipif(
    MOSQUITTO is None, reason="the mosquitto broker is not installed (apt-get install "
                              "mosquitto; .ci/run installs it)")

DEVICE = "test-gate-1"
PREFIX = "county/schools"
EVENTS = f"{PREFIX}/{DEVICE}/events"
STATUS = f"{PREFIX}/{DEVICE}/status"
USER, PASSWORD = "gate-1", "s3cret-broker-password"
PRINCIPAL = "+8613800138000"


@pytest.fixture
def broker(tmp_path):
    """make(password=None, tls=None, acl=None) → a started Broker, stopped at teardown."""
    brokers: list[Broker] = []

    def make(password: str | None = None, **options) -> Broker:
        made = Broker(tmp_path / f"broker{len(brokers)}",
                      account=None if password is None else (USER, password), **options)
        brokers.append(made)
        return made.start()
    yield make
    for each in brokers:
        each.stop()


class Subscriber:
    """A fleet dashboard: a persistent-session QoS 1 subscriber to everything under
    PREFIX, reconnecting by itself; what it received, in order."""

    def __init__(self, port: int, *, tls_ca: Path | None = None, user: str | None = None):
        import paho.mqtt.client as paho
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.messages: list[tuple[str, dict, bool]] = []  # topic, JSON, retained
        self.connected = threading.Event()
        self._lock = threading.Lock()
        client = paho.Client(paho.CallbackAPIVersion.VERSION2,
                             client_id=f"dashboard-{port}", protocol=paho.MQTTv5)
        if user is not None:
            client.username_pw_set(user, PASSWORD)
        if tls_ca is not None:
            import ssl
            client.tls_set_context(ssl.create_default_context(cafile=str(tls_ca)))
        client.reconnect_delay_set(0.1, 0.5)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        client.connect_async("127.0.0.1", port, keepalive=10, clean_start=False,
                             properties=properties)
        client.loop_start()
        self.client = client

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if not reason.is_failure:
            client.subscribe(f"{PREFIX}/#", qos=1)
            self.connected.set()

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append((message.topic, json.loads(message.payload), message.retain))

    def received(self, topic_start: str = EVENTS) -> list[tuple[str, dict]]:
        with self._lock:
            return [(t, doc) for t, doc, _ in self.messages if t.startswith(topic_start)]

    def event_ids(self) -> list[str]:
        return [doc["id"] for _, doc in self.received()]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.contextmanager
def subscribed(port: int, **options):
    sub = Subscriber(port, **options)
    try:
        assert sub.connected.wait(10), "the dashboard did not connect"
        time.sleep(0.2)  # the SUBACK
        yield sub
    finally:
        sub.close()


def retained_status(port: int, **options) -> dict | None:
    """What a dashboard that connects now is told of the device: the retained status."""
    import paho.mqtt.subscribe as paho_subscribe
    auth = {"username": USER, "password": PASSWORD} if options.get("user") else None
    tls = {"ca_certs": str(options["tls_ca"])} if options.get("tls_ca") else None
    message = paho_subscribe.simple(STATUS, hostname="127.0.0.1", port=port, auth=auth,
                                    tls=tls, retained=True, keepalive=5)
    return json.loads(message.payload)


def mqtt_site(folder: Path, port: int, *, scheme: str = "mqtt", **keys) -> SimSite:
    return SimSite(folder / "var", folder / "control.sock", device_id=DEVICE, mqtt_keys={
        "url": f"{scheme}://127.0.0.1:{port}", "topic_prefix": PREFIX, **keys})


@contextlib.contextmanager
def watched_site(folder: Path, port: int, *, tls_ca: Path | None = None, **keys):
    """(the simulated site on the broker at ``port``, a dashboard subscribed before it
    started); ``keys`` as mqtt_site's."""
    with subscribed(port, tls_ca=tls_ca) as dashboard, contextlib.ExitStack() as stack:
        yield start_site(mqtt_site(folder, port, **keys), folder, stack), dashboard


def mqtt_pending(db: Path) -> int:
    store = Store(db, readonly=True)
    try:
        return store.pending_count(MQTT).pending
    finally:
        store.close()


def mqtt_accepted(site, event) -> bool:
    """Whether the event counts as accepted over MQTT (cancelling its SMS fallback)."""
    store = Store(site.cfg.storage.db_path, readonly=True)
    try:
        return MQTT in store.reach(event.seq).accepted_by
    finally:
        store.close()


def record(site, kind: str = "panic", subject: str = "guard_room", label: str = "门卫室一键报警"):
    return site.daemon.loop.call(site.daemon.record, kind, subject, label, None)


def stored_ids(site) -> list[str]:
    """Every event's id, the start-up heartbeat's first (a transport is configured)."""
    return [e.id for e in site.daemon.loop.call(site.daemon.store.events)]


def faults(site) -> dict:
    return site.daemon.loop.call(lambda: dict(site.daemon.faults))


# ---------------------------------------------------------------------- with a broker


@needs_mosquitto
def test_events_arrive_on_their_topics_as_the_cloudevents_the_uplink_posts(
        broker, short_dir, wait_until):
    mosquitto = broker()
    with watched_site(short_dir, mosquitto.port) as (site, dashboard):
        sent = [record(site), record(site, "gate_open", "main_gate", "校门"),
                record(site, "tamper", "box", "报警主机防拆")]
        wait_until(lambda: len(dashboard.received()) >= 4, 10, what="four events")
        received = dashboard.received()
        assert [topic for topic, _ in received] == [
            f"{EVENTS}/heartbeat", f"{EVENTS}/panic", f"{EVENTS}/gate_open", f"{EVENTS}/tamper"]
        for (_, doc), event in zip(received[1:], sent):
            assert cloudevent_problems(doc) == []
            assert doc == event.to_cloudevent(DEVICE)  # the uplink's very document
        wait_until(lambda: mqtt_pending(site.cfg.storage.db_path) == 0, 5,
                   what="the deliveries marked on their PUBACK")
        assert site.daemon.loop.call(site.daemon.status)["mqtt"]["connected"] is True
        # In clear, a PUBACK may be a stranger's: it holds back no SMS fallback.
        assert not mqtt_accepted(site, sent[0])


@needs_mosquitto
def test_the_retained_status_is_online_with_the_summary_and_its_last_will_says_offline(
        broker, short_dir, tmp_path, wait_until):
    """A real daemon process, killed with SIGKILL: the broker's Last Will sets it offline."""
    mosquitto = broker()
    site = mqtt_site(short_dir, mosquitto.port)
    config_path = site.write(tmp_path / "config.toml")
    daemon = start_daemon(config_path, short_dir / "control.sock", tmp_path / "daemon.log")
    try:
        assert daemon.cli("sim", "guard_room", "on").returncode == 0

        def alarm_online():
            status = retained_status(mosquitto.port)
            return status if status["online"] and status["alarm"]["active"] else None
        status = wait_until(alarm_online, 15, interval=0.3, what="an online status with the alarm")
        assert status["device_id"] == DEVICE and status["site"] == site.name
        assert status["alarm"]["inputs"] == ["guard_room"]
        assert status["faults"] == [] and status["signal"] is None  # no modem
        assert status["backlog"] == {"mqtt": 0}
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(5)
        offline = wait_until(lambda: not retained_status(mosquitto.port)["online"] and
                             retained_status(mosquitto.port), 60, interval=0.5,
                             what="the Last Will (offline) once the broker misses the device")
        assert offline == {"online": False, "device_id": DEVICE, "site": site.name,
                           "reason": "connection_lost", "time": None}
    finally:
        stop_daemon(daemon)


@needs_mosquitto
def test_a_clean_stop_publishes_offline(broker, short_dir, wait_until):
    mosquitto = broker()
    with contextlib.ExitStack() as stack:
        site = start_site(mqtt_site(short_dir, mosquitto.port), short_dir, stack)
        wait_until(lambda: retained_status(mosquitto.port)["online"], 10, interval=0.2)
    status = retained_status(mosquitto.port)
    assert status["online"] is False and status["reason"] == "stopped" and status["time"]


@needs_mosquitto
def test_a_broker_killed_mid_flight_loses_no_event_and_repeats_only_ids(
        broker, short_dir, wait_until):
    mosquitto = broker()
    with watched_site(short_dir, mosquitto.port) as (site, dashboard):
        time.sleep(1.5)  # the broker has saved the dashboard's session (autosave_interval)
        ids = []
        for n in range(60):  # the broker is down from the 21st event to the 41st
            ids.append(record(site, "gate_open" if n % 2 else "gate_closed", "main_gate",
                              "校门").id)
            if n == 20:
                mosquitto.kill()
            if n == 40:
                mosquitto.start()
        assert set(ids) < set(stored_ids(site))  # and the heartbeat
        wait_until(lambda: set(dashboard.event_ids()) >= set(stored_ids(site)), 60,
                   interval=0.1, what="every event at the dashboard after the broker's restart")
        # Repeats are of ids only; the order across the restart is the broker's (it
        # hands a reconnecting subscriber its queued and its new messages interleaved).
        assert set(dashboard.event_ids()) == set(stored_ids(site))
        wait_until(lambda: mqtt_pending(site.cfg.storage.db_path) == 0, 10)


@needs_mosquitto
def test_a_broker_down_at_start_is_a_fault_then_recovers_and_delivers(
        broker, short_dir, wait_until):
    down = Broker(short_dir / "later")  # its port chosen, nothing listening yet
    try:
        with contextlib.ExitStack() as stack:
            site = start_site(mqtt_site(short_dir, down.port), short_dir, stack)
            event = record(site)
            assert wait_until(lambda: faults(site).get("mqtt"), 30,
                              what="an mqtt fault") == "unreachable"
            assert site.daemon.loop.call(site.daemon.status)["mqtt"]["ok"] is False
            down.start()
            with subscribed(down.port) as dashboard:
                # Within the capped backoff (60 s at most between attempts).
                wait_until(lambda: "mqtt" not in faults(site), 90, interval=0.1,
                           what="the mqtt fault recovered")
                wait_until(lambda: event.id in dashboard.event_ids(), 10)
            kinds = [(e.kind, e.subject) for e in site.daemon.loop.call(site.daemon.store.events)]
            assert ("fault", "mqtt") in kinds and ("recovered", "mqtt") in kinds
    finally:
        down.stop()


@needs_mosquitto
def test_a_wrong_password_is_a_fault_and_no_crash(broker, short_dir, tmp_path, wait_until,
                                                    caplog):
    mosquitto = broker(password=PASSWORD)
    wrong = tmp_path / "mqtt-password"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    with contextlib.ExitStack() as stack:
        site = start_site(mqtt_site(short_dir, mosquitto.port, username=USER,
                                    password_file=wrong), short_dir, stack)
        record(site)
        assert wait_until(lambda: faults(site).get("mqtt"), 15) == "refused"
        assert mqtt_pending(site.cfg.storage.db_path) == len(stored_ids(site))  # all owed
        assert site.daemon.loop.call(site.daemon.status)["device_id"] == DEVICE  # alive
        # The right password, and the next attempt gets through.
        wrong.write_text(PASSWORD + "\n")
        wait_until(lambda: mqtt_pending(site.cfg.storage.db_path) == 0, 90, interval=0.1,
                   what="delivered with the right password")
    assert "not-the-password" not in caplog.text and PASSWORD not in caplog.text


@needs_mosquitto
def test_an_event_the_broker_refuses_stays_owed_and_is_a_fault(broker, short_dir, wait_until):
    """MQTT 5: an ACL that refuses the events topic answers with a refused PUBACK."""
    # The dashboard logs in with the device's account here: it may read everything.
    status_only = f"user {USER}\ntopic read {PREFIX}/#\ntopic write {STATUS}\n"
    mosquitto = broker(password=PASSWORD, acl=status_only)
    password_file = short_dir / "mqtt-password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    with contextlib.ExitStack() as stack:
        site = start_site(mqtt_site(short_dir, mosquitto.port, username=USER,
                                    password_file=password_file), short_dir, stack)
        event = record(site)
        assert wait_until(lambda: faults(site).get("mqtt"), 15) == "refused"
        assert mqtt_pending(site.cfg.storage.db_path) == len(stored_ids(site))
        mosquitto.acl.write_text(status_only + f"topic write {EVENTS}/#\n")
        mosquitto.reload()
        with subscribed(mosquitto.port, user=USER) as dashboard:
            wait_until(lambda: event.id in dashboard.event_ids(), 90, interval=0.1,
                       what="the event, once the ACL lets it through")
        wait_until(lambda: "mqtt" not in faults(site), 10)


class FakeBroker:
    """A broken or hostile broker on a loopback port, speaking just enough MQTT 5, as
    ``answer`` (which a test may change at any time) says: bytes are sent for the CONNECT,
    then it hangs up; "close" hangs up at once;
    "connack-close" takes the session and hangs up; "silent" takes the session and
    answers pings, never a PUBLISH; "ack" is a broker that works: a PUBACK for each
    QoS 1 PUBLISH, whose event ids it keeps. ``tls``: (certificate, key)."""

    def __init__(self, answer: str | bytes, *, tls: tuple[Path, Path] | None = None) -> None:
        self.answer = answer
        self.connections = 0
        self.event_ids: list[str] = []  # acknowledged, in order
        self._tls = None
        if tls is not None:
            self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._tls.load_cert_chain(*tls)
        self._open: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:  # closed
                return
            self.connections += 1
            self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError, ValueError):  # ssl.SSLError is an OSError
            if self.answer == "close":
                return
            stream = self._tls.wrap_socket(conn, server_side=True) if self._tls else conn
            read_packet(stream)  # CONNECT
            if isinstance(self.answer, bytes):
                stream.sendall(self.answer)
                time.sleep(0.2)
                return
            stream.sendall(b"\x20\x03\x00\x00\x00")  # CONNACK: session taken
            while self.answer != "connack-close":
                first, body = read_packet(stream)
                if first >> 4 == 12:  # PINGREQ
                    stream.sendall(b"\xd0\x00")
                elif first >> 4 == 3 and self.answer == "ack":
                    self._acknowledge(stream, first, body)

    def _acknowledge(self, stream: socket.socket, first: int, body: bytes) -> None:
        if (first >> 1) & 3 != 1:  # QoS 1 only: nothing else is owed a PUBACK
            return
        topic_end = 2 + int.from_bytes(body[:2], "big")
        packet_id = body[topic_end:topic_end + 2]
        properties, start = read_varint(body, topic_end + 2)
        if b"/events/" in body[2:topic_end]:
            self.event_ids.append(json.loads(body[start + properties:])["id"])
        stream.sendall(b"\x40\x02" + packet_id)  # PUBACK, success

    def close(self) -> None:
        self._server.close()
        for conn in self._open:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def read_packet(stream: socket.socket) -> tuple[int, bytes]:
    """One MQTT packet: its first byte and what follows its length (at most 64 KiB)."""
    first = receive(stream, 1)[0]
    header = b""
    while not header or header[-1] & 0x80:
        header += receive(stream, 1)
    length, _ = read_varint(header, 0)
    if length > MAX_PACKET_BYTES:
        raise ValueError("a packet too long for this broker")
    return first, receive(stream, length)


def read_varint(data: bytes, at: int) -> tuple[int, int]:
    """MQTT's variable byte integer at ``at``: (its value, where what follows starts)."""
    value, shift = 0, 0
    while True:
        digit = data[at]
        value, shift, at = value | (digit & 0x7F) << shift, shift + 7, at + 1
        if not digit & 0x80 or shift > 21:
            return value, at


def receive(stream: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        more = stream.recv(size - len(data))
        if not more:
            raise ConnectionError("the device hung up")
        data += more
    return data


@pytest.mark.parametrize("answer", [
    b"\x20\x03\x00\x00\x05",                    # CONNACK whose properties are cut short
    b"\x20\x07\x00\x00\x04\x1f\x00\x01\xff",      # its reason string not UTF-8
    b"\x20\x02\x01\x00\x40\x02\x00\x01\x90\x03\x00\x01\xff",  # CONNACK, then junk
    b"\xff\xff\xff\xff\xff\x01",                # no MQTT at all
    b"HTTP/1.1 400 Bad Request\r\n\r\n",          # a web server on the broker's port
])
def test_a_broker_speaking_garbage_costs_only_a_reconnect(answer, short_dir, wait_until,
                                                          caplog):
    garbage = FakeBroker(answer)
    try:
        with contextlib.ExitStack() as stack:
            site = start_site(mqtt_site(short_dir, garbage.port), short_dir, stack,
                              options=WorkerOptions(uplink_rng=lambda: 0.0))
            wait_until(lambda: garbage.connections >= 2, 15, what="the device trying again")
            assert site.daemon.loop.call(site.daemon.status)["device_id"] == DEVICE
            assert mqtt_pending(site.cfg.storage.db_path) == len(stored_ids(site))
    finally:
        garbage.close()
    assert "Traceback" not in caplog.text and "step failed" not in caplog.text


@pytest.fixture(scope="module")
def broker_cert(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key, made by openssl."""
    cert, key = self_signed_cert(tmp_path_factory.mktemp("mqtt-tls"))
    key.chmod(0o644)  # mosquitto may read it as another user
    return cert, key


@needs_mosquitto
def test_mqtts_with_the_brokers_ca_works(broker, broker_cert, short_dir, wait_until):
    cert, _ = broker_cert
    mosquitto = broker(tls=broker_cert)
    with watched_site(short_dir, mosquitto.port, tls_ca=cert, scheme="mqtts",
                      ca_file=cert) as (site, dashboard):
        event = record(site)
        wait_until(lambda: event.id in dashboard.event_ids(), 15)
        assert "mqtt" not in faults(site)
        wait_until(lambda: mqtt_accepted(site, event), 5, what="a verified acceptance")


@needs_mosquitto
def test_mqtts_with_another_ca_is_a_tls_fault(broker, broker_cert, short_dir, tmp_path,
                                              wait_until):
    mosquitto = broker(tls=broker_cert)
    other_ca, _ = self_signed_cert(tmp_path, "other-ca")
    with contextlib.ExitStack() as stack:
        site = start_site(mqtt_site(short_dir, mosquitto.port, scheme="mqtts",
                                    ca_file=other_ca), short_dir, stack)
        record(site)
        assert wait_until(lambda: faults(site).get("mqtt"), 15) == "tls"
        assert mqtt_pending(site.cfg.storage.db_path) == len(stored_ids(site))  # all owed


def broker_line(config_path: Path) -> tuple[int, str]:
    result = edge_cli("check", config=config_path)
    [line] = [line for line in result.stdout.splitlines() if line[2:].startswith("broker")]
    return result.returncode, line


@needs_mosquitto
def test_check_connects_as_the_device_or_asks_the_running_daemon(broker, short_dir, tmp_path):
    mosquitto = broker(password=PASSWORD)
    password_file = tmp_path / "mqtt-password"
    password_file.write_text("wrong\n")
    password_file.chmod(0o600)
    site = mqtt_site(short_dir, mosquitto.port, username=USER, password_file=password_file)
    config_path = site.write(tmp_path / "config.toml")
    code, line = broker_line(config_path)
    assert code == 1 and line.startswith("✗ broker") and "Not authorized" in line, line
    password_file.write_text(PASSWORD + "\n")
    assert broker_line(config_path)[1].startswith("✓ broker")
    daemon = start_daemon(config_path, short_dir / "control.sock", tmp_path / "daemon.log")
    try:  # a second connection as the device would throw the daemon's off: none is made
        line = ""
        for _ in range(50):
            line = broker_line(config_path)[1]
            if "connected" in line:
                break
            time.sleep(0.1)
        assert line.startswith("✓ broker") and "connected" in line, line
        assert "mqtt connection" not in daemon.log_text()  # never lost
    finally:
        stop_daemon(daemon)


# ---------------------------------------------------------------------- config

def mqtt_config(table: str) -> config.Config:
    """The simulated site's config with ``table``'s keys as its [mqtt] table."""
    site = SimSite(Path("/var/lib/edge-alarm"), extra=f"\n[mqtt]\n{table}")
    return config.parse(tomllib.loads(site.text()))


def mqtt_problems(table: str) -> list[str]:
    try:
        mqtt_config(table)
    except config.ConfigError as e:
        return e.problems
    return []


def test_the_mqtt_table_reads_its_keys_and_makes_mqtt_a_transport():
    cfg = mqtt_config("""url = "mqtts://emqx.county.edu.cn"
ca_file = "/etc/edge-alarm/broker-ca.pem"
username = "gaoshan-gate-1"
password_file = "/etc/edge-alarm/mqtt-password"
topic_prefix = "county/schools"
""")
    assert cfg.mqtt is not None
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.tls) == ("emqx.county.edu.cn", 8883, True)
    assert cfg.transports == ("mqtt",) and cfg.has_transport
    plain = mqtt_config('url = "mqtt://10.0.0.5"\n')
    assert plain.mqtt == config.Mqtt(url="mqtt://10.0.0.5")
    assert (plain.mqtt.port, plain.mqtt.topic_prefix) == (1883, "edge-alarm")


@pytest.mark.parametrize("url", ["http://broker.county.cn", "tcp://broker.county.cn:1883",
                                 "mqtt://", "mqtt://broker.county.cn/path",
                                 "mqtt://user:pw@broker.county.cn", "mqtt://broker:99999",
                                 "mqtt://broker.example.cn"])
def test_a_bad_url_is_refused(url):
    [line] = mqtt_problems(f'url = "{url}"\n')
    assert line.startswith("config error: config.toml: [mqtt] url: ")
    assert "pw" not in line.split("url: ", 1)[1] or "credentials" in line


def test_mqtts_needs_a_ca_file():
    assert mqtt_problems('url = "mqtts://broker.county.cn"\n') == [
        "config error: config.toml: [mqtt] ca_file: required with an mqtts:// url: the CA "
        "that signed the broker's certificate"]


def test_unknown_keys_a_password_without_user_and_wildcards_are_refused():
    assert mqtt_problems('url = "mqtt://b.county.cn"\nqos = 2\nclient_id = "x"\n') == [
        "config error: config.toml: [mqtt] qos: unknown key",
        "config error: config.toml: [mqtt] client_id: unknown key"]
    [line] = mqtt_problems('url = "mqtt://b.county.cn"\npassword_file = "/etc/p"\n')
    assert line.startswith("config error: config.toml: [mqtt] password_file: needs a username")
    for prefix in ("county/#", "a/+/b", "/lead", "trail/", "$SYS", "a//b", ""):
        [line] = mqtt_problems(f'url = "mqtt://b.county.cn"\ntopic_prefix = "{prefix}"\n')
        assert line.startswith("config error: config.toml: [mqtt] topic_prefix: ")


# ---------------------------------------------------------------------- a hostile broker


class HostileBroker:
    """Takes the CONNECT, answers CONNACK, then sends ``packets``, on and on."""

    def __init__(self, packets: list[bytes]) -> None:
        self._packets = packets
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self._server.accept()
        with conn, contextlib.suppress(OSError):
            conn.recv(4096)  # CONNECT
            conn.sendall(b"\x20\x03\x00\x00\x00")  # CONNACK: session taken
            for packet in self._packets:
                conn.sendall(packet)
            conn.recv(1)  # until the client goes

    def close(self) -> None:
        self._server.close()
        self._thread.join(5)


def mqtt_packet(first_byte: int, length: int, body: bytes) -> bytes:
    """A packet announcing ``length`` bytes after its header, of which ``body`` is sent."""
    varint = bytearray()
    while True:
        length, digit = divmod(length, 128)
        varint.append(digit | (0x80 if length else 0))
        if not length:
            return bytes([first_byte]) + bytes(varint) + body


def qos2_publish(mid: int, size: int) -> bytes:
    """PUBLISH QoS 2 of ``size`` bytes on topic "x" (MQTT 5: no properties)."""
    body = b"\x00\x01x" + mid.to_bytes(2, "big") + b"\x00"
    body += bytes(size - len(body))
    return mqtt_packet(0x34, size, body)


class Heard:
    """A link listener that writes down what it hears."""

    def __init__(self) -> None:
        self.connacks: list[str | None] = []
        self.losses: list[str] = []

    def connack(self, refused: str | None) -> None:
        self.connacks.append(refused)

    def puback(self, mid: int, refused: str | None) -> None:
        pass

    def lost(self, why: str, was_connected: bool) -> None:
        self.losses.append(why)


@pytest.mark.parametrize("packets", [
    [mqtt_packet(0x30, 64 * 1024 * 1024, bytes(1024 * 1024))],  # one of 64 MiB announced
    [qos2_publish(mid, 60_000) for mid in range(1, 300)],       # kept until their PUBREL
], ids=["huge-packet", "qos2-publishes"])
def test_a_hostile_broker_is_dropped_before_it_takes_memory(packets):
    hostile, heard, bell = HostileBroker(packets), Heard(), Bell()
    link = MqttLink(config.Mqtt(url=f"mqtt://127.0.0.1:{hostile.port}"), DEVICE, None, None,
                    heard)
    tracemalloc.start()
    try:
        link.open()
        deadline = time.monotonic() + 10
        while not heard.losses and time.monotonic() < deadline:
            link.serve(0.1, bell)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        link.close(goodbye=False)
        bell.close()
        hostile.close()
    assert heard.connacks == [None]
    assert heard.losses, "the connection was kept, reading on"
    assert peak < 16 * MAX_PACKET_BYTES


def cli_status(site) -> dict:
    """`edge-alarm status --json`, as the technician reads it."""
    return json.loads(edge_cli("status", "--json", config=site.config_path).stdout)


def mqtt_fault(site) -> dict | None:
    """The status's mqtt entry while the mqtt fault is raised, with its reason."""
    status = cli_status(site)
    if "mqtt" not in status["faults"]:
        return None
    return {**status["mqtt"], "reason": status["fault_reasons"]["mqtt"]}


def recovered_and_delivered(site) -> bool:
    """Whether the mqtt fault is gone and every event was acknowledged."""
    return ("mqtt" not in cli_status(site)["faults"]
            and mqtt_pending(site.cfg.storage.db_path) == 0)


# A PUBACK bound short enough for a test; retries 0.5 s apart (no jitter).
TEST_PUBACK_S = 2.0
FAST_RETRIES = WorkerOptions(uplink_rng=lambda: 0.0, mqtt_puback_s=TEST_PUBACK_S,
                             modem_timings=SHORT_MODEM_TIMINGS)


def test_a_broker_that_never_acknowledges_is_a_fault_the_sms_still_goes_and_acks_recover(
        broker_cert, short_dir, emulator, wait_until):
    """Over mqtts:// a PUBACK would count (it would cancel the SMS): a man in the middle
    with the broker's key, or a broken broker, that takes the session and then sits on
    every PUBLISH. The alarm goes by SMS, the technician sees the fault, and once the
    broker acknowledges again every event arrives."""
    cert, _ = broker_cert
    fake = FakeBroker("silent", tls=broker_cert)
    site = dataclasses.replace(
        mqtt_site(short_dir, fake.port, scheme="mqtts", ca_file=cert),
        contacts=[Contact("principal", PRINCIPAL, ["panic"])],
        sms_keys={"immediate": []})  # the panic's SMS waits for the transports: a fallback
    try:
        with contextlib.ExitStack() as stack:
            running = start_site(site, short_dir, stack, modem=emulator, options=FAST_RETRIES)
            event = record(running)
            # Three connections, each given TEST_PUBACK_S, with 0.5 s between them.
            fault = wait_until(lambda: mqtt_fault(running), 30, interval=0.5,
                               what="an mqtt fault in status --json")
            assert fault["reason"] == "unreachable" and fault["ok"] is False
            assert "PUBACK" in fault["last_error"]
            assert fake.connections >= 3  # dropped and tried again
            emulator.wait_sent(1, timeout=DEFAULT_SMS_FALLBACK_AFTER_S + 20)
            assert not mqtt_accepted(running, event)
            assert mqtt_pending(running.cfg.storage.db_path) == len(stored_ids(running))
            fake.answer = "ack"
            wait_until(lambda: recovered_and_delivered(running), 30, interval=0.5,
                       what="the fault recovered and every event acknowledged")
            assert set(fake.event_ids) == set(stored_ids(running))  # ids repeated only
            assert mqtt_accepted(running, event)
            assert len(emulator.sent) == 1
    finally:
        fake.close()


@pytest.mark.parametrize("answer", ["close", "connack-close"])
def test_a_broker_that_hangs_up_every_time_is_a_fault_then_recovers(answer, short_dir,
                                                                     wait_until):
    """Each connection "succeeds" and ends before the broker acknowledged anything: those
    are failed attempts, three in a row a fault."""
    fake = FakeBroker(answer)
    try:
        with contextlib.ExitStack() as stack:
            site = start_site(mqtt_site(short_dir, fake.port), short_dir, stack,
                              options=FAST_RETRIES)
            record(site)
            fault = wait_until(lambda: mqtt_fault(site), 20, interval=0.5,
                               what="an mqtt fault in status --json")
            assert fault["reason"] == "unreachable" and fault["ok"] is False
            fake.answer = "ack"
            wait_until(lambda: recovered_and_delivered(site), 30, interval=0.5,
                       what="the fault recovered and every event acknowledged")
            assert set(fake.event_ids) == set(stored_ids(site))
    finally:
        fake.close()
