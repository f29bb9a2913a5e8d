"""Spoofing on the shared bridge, on real LXD: an instance the connector made can neither send
as a neighbour (its IP, or a forged MAC) nor pose as the gateway where nodes call the server,
while its own traffic flows. A control instance without the filters does the same things and
they work, so that the attacks are known to bite.

The attacks are raw Ethernet frames sent from inside the containers (python3 and an
AF_PACKET socket: the image has no arping or scapy), and an `ip addr add` of the victim's
address followed by an ordinary send from it."""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stratuslab import config
from stratuslab.cloud.base import InstanceSpec
from stratuslab.cloud.connectors.lxd import LxdConnector
from stratuslab.cloud.connectors.lxd_api import LxdApi
from stratuslab.cloud.connectors.lxd_nics import NIC_FILTERING

pytestmark = pytest.mark.lxd

IMAGE = "debian-12"
# Sends frames built by hand: `udp SRC_MAC DST_MAC SRC_IP DST_IP PORT TEXT COUNT` or
# `arp SRC_MAC DST_MAC CLAIMED_IP DST_IP COUNT` (an ARP reply: CLAIMED_IP is at SRC_MAC).
FORGE = r"""
import socket, struct, sys, time

def checksum(data):
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

def mac(text):
    return bytes.fromhex(text.replace(":", ""))

def ip(text):
    return socket.inet_aton(text)

kind, args, count = sys.argv[1], sys.argv[2:-1], int(sys.argv[-1])
if kind == "udp":
    src_mac, dst_mac, src_ip, dst_ip, port, text = args
    udp = struct.pack("!HHHH", 40000, int(port), 8 + len(text), 0) + text.encode()
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                         ip(src_ip), ip(dst_ip))
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    frame = mac(dst_mac) + mac(src_mac) + b"\x08\x00" + header + udp
else:
    src_mac, dst_mac, claimed, dst_ip = args
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, mac(src_mac), ip(claimed),
                       mac(dst_mac), ip(dst_ip))
    frame = mac(dst_mac) + mac(src_mac) + b"\x08\x06" + body
sender = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sender.bind(("eth0", 0))
for _ in range(count):
    sender.send(frame)
    time.sleep(0.2)
"""
SEND_FROM = r"""
import socket, sys
source, target, port, text = sys.argv[1:]
sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sender.bind((source, 0))
for _ in range(5):
    sender.sendto(text.encode(), (target, int(port)))
"""


class Machine:
    def __init__(self, connector: LxdConnector, name: str) -> None:
        self.connector = connector
        self.name = name
        self.address = connector.wait_for_address(name, timeout=60).addresses[0]
        self.mac = self.run("cat", "/sys/class/net/eth0/address").strip()

    def run(self, *command: str) -> str:
        done = self.connector.exec(self.name, list(command), timeout=60)
        assert done.exit_code == 0, f"{command}: {done.stderr}"
        return done.stdout

    def forge(self, *args: str) -> None:
        self.run("python3", "-c", FORGE, *args)

    def neighbour(self, address: str) -> str:
        """The MAC this machine sends to ``address`` with ('' when it knows none)."""
        fields = self.run("ip", "neigh", "show", address).split()
        return fields[fields.index("lladdr") + 1] if "lladdr" in fields else ""


class Listener:
    """UDP datagrams to the gateway (the host, where the server listens), by source address."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received: set[tuple[str, str]] = set()
        self.stopped = False
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()

    def _receive(self) -> None:
        while not self.stopped:
            try:
                data, (source, _) = self.sock.recvfrom(1024)
            except TimeoutError:
                continue
            self.received.add((source, data.decode()))

    def close(self) -> None:
        self.stopped = True
        self.thread.join(5)
        self.sock.close()


@pytest.fixture(scope="module")
def lxd() -> Iterator[tuple[LxdConnector, config.Settings]]:
    settings = config.load()
    connector = LxdConnector(endpoint=settings.lxd_endpoint, profile=settings.lxd_profile)
    try:
        yield connector, settings
    finally:
        connector.close()


@pytest.fixture(scope="module")
def machines(
    lxd: tuple[LxdConnector, config.Settings],
) -> Iterator[tuple[Machine, Machine, Machine]]:
    """An attacker and a victim made by the connector, and a control the connector did not
    make, its NIC unfiltered; all three deleted at the end, whatever happened."""
    connector, settings = lxd
    suffix = secrets.token_hex(4)
    names = [f"test-{role}-{suffix}" for role in ("attacker", "victim", "control")]
    try:
        for name in names[:2]:
            connector.create(InstanceSpec(name=name, image=IMAGE))
        unfiltered = {
            name: {**device, **dict.fromkeys(NIC_FILTERING, "false")}
            for name, device in connector.ex_filtered_nics().items()
        }
        fingerprint = connector.get_image(IMAGE).fingerprint
        connector.api.post(
            "/1.0/instances",
            {
                "name": names[2],
                "type": "container",
                "source": {"type": "image", "fingerprint": fingerprint},
                "profiles": [settings.lxd_profile],
                "devices": unfiltered,
            },
        )
        connector.start(names[2])
        attacker, victim, control = (Machine(connector, name) for name in names)
        yield attacker, victim, control
    finally:
        for name in names:
            connector.destroy(name)


def test_the_connectors_instances_carry_the_filters(
    lxd: tuple[LxdConnector, config.Settings], machines: tuple[Machine, Machine, Machine]
) -> None:
    connector, _ = lxd
    attacker = machines[0]
    devices = connector.api.get(LxdApi.path("instances", attacker.name))["devices"]
    assert devices and all(
        {key: nic.get(key) for key in NIC_FILTERING} == NIC_FILTERING for nic in devices.values()
    )


def test_nobody_sends_as_a_neighbour_or_with_a_forged_mac_but_their_own_traffic_flows(
    lxd: tuple[LxdConnector, config.Settings], machines: tuple[Machine, Machine, Machine]
) -> None:
    _, settings = lxd
    attacker, victim, control = machines
    gateway = settings.bridge_gateway
    bridge_mac = Path(f"/sys/class/net/{settings.lxd_bridge}/address").read_text().strip()
    listener = Listener(gateway)
    port = str(listener.port)
    try:
        attacker.forge("udp", attacker.mac, bridge_mac, attacker.address, gateway, port, "own", "5")
        attacker.forge(
            "udp", attacker.mac, bridge_mac, victim.address, gateway, port, "as-victim", "5"
        )
        forged = "02:00:5e:10:00:01"
        attacker.forge("udp", forged, bridge_mac, attacker.address, gateway, port, "forged", "5")
        # The plain way: take the victim's address, then send from it.
        attacker.run("ip", "addr", "add", f"{victim.address}/32", "dev", "eth0")
        attacker.run("python3", "-c", SEND_FROM, victim.address, gateway, port, "bound-as-victim")
        control.forge("udp", control.mac, bridge_mac, victim.address, gateway, port, "control", "5")
        time.sleep(1)
    finally:
        listener.close()
    assert listener.received == {
        (attacker.address, "own"),  # its own traffic reaches the server's host
        (victim.address, "control"),  # without the filters, the same spoof gets through
    }


def test_nobody_poses_as_the_gateway_to_a_neighbour(
    lxd: tuple[LxdConnector, config.Settings], machines: tuple[Machine, Machine, Machine]
) -> None:
    """ARP replies saying the gateway (where nodes call the server) is at the attacker's MAC
    never reach the victim; the control's do, and would take the victim's traffic."""
    _, settings = lxd
    attacker, victim, control = machines
    gateway = settings.bridge_gateway
    bridge_mac = Path(f"/sys/class/net/{settings.lxd_bridge}/address").read_text().strip()
    victim.run("python3", "-c", SEND_FROM, victim.address, gateway, "9", "hello")
    assert victim.neighbour(gateway) == bridge_mac
    # Linux takes an unasked-for reply over an entry older than its locktime (1 s): 3 s of them.
    attacker.forge("arp", attacker.mac, victim.mac, gateway, victim.address, "15")
    assert victim.neighbour(gateway) == bridge_mac
    control.forge("arp", control.mac, victim.mac, gateway, victim.address, "15")
    assert victim.neighbour(gateway) == control.mac
