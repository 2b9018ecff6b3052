"""A minimal MQTT 5 / 3.1.1 broker at the protocol level that records every packet a client sends.

Mosquitto does not show us the CONNECT flags, Will or SUBSCRIBE order a client used; this fake does. It
answers CONNECT, SUBSCRIBE, PUBLISH (QoS 1), PINGREQ, and can drop the first connections after N PUBLISHes so
the client reconnects. It delivers nothing; use the real broker for that.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass, field


@dataclass
class Packet:
    """One recorded packet: kind (CONNECT, SUBSCRIBE, PUBLISH, DISCONNECT), connection number, fields."""

    kind: str
    conn: int
    fields: dict[str, object] = field(default_factory=dict)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    mult, value = 1, 0
    while True:
        b = buf[pos]
        pos += 1
        value += (b & 0x7F) * mult
        if not b & 0x80:
            return value, pos
        mult *= 128


def _str(buf: bytes, pos: int) -> tuple[bytes, int]:
    (n,) = struct.unpack_from("!H", buf, pos)
    return buf[pos + 2 : pos + 2 + n], pos + 2 + n


def _props(buf: bytes, pos: int) -> tuple[dict[int, object], int]:
    length, pos = _varint(buf, pos)
    end = pos + length
    props: dict[int, object] = {}
    while pos < end:
        pid = buf[pos]
        pos += 1
        if pid == 0x11:  # session expiry interval, four-byte integer
            props[pid] = struct.unpack_from("!I", buf, pos)[0]
            pos += 4
        elif pid in (0x21, 0x22, 0x23):  # two-byte integers
            props[pid] = struct.unpack_from("!H", buf, pos)[0]
            pos += 2
        elif pid in (0x01, 0x17, 0x19, 0x24, 0x25):  # bytes
            props[pid] = buf[pos]
            pos += 1
        elif pid in (0x02, 0x18, 0x27):  # four-byte integers
            props[pid] = struct.unpack_from("!I", buf, pos)[0]
            pos += 4
        elif pid == 0x0B:  # subscription identifier
            props[pid], pos = _varint(buf, pos)
        elif pid == 0x26:  # user property: string pair
            k, pos = _str(buf, pos)
            v, pos = _str(buf, pos)
            props.setdefault(pid, [])
            props[pid].append((k, v))  # type: ignore[attr-defined]
        else:  # strings / binary data
            props[pid], pos = _str(buf, pos)
    return props, end


class FakeBroker:
    """Listens on a free port; `packets` grows as clients talk to it."""

    def __init__(self, drop_after_publishes: int | None = None, drop_connections: int = 1 << 30) -> None:
        self.packets: list[Packet] = []
        self.drop_after_publishes = drop_after_publishes
        self.drop_connections = drop_connections
        self._lock = threading.Lock()
        self._srv = socket.socket()
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen()
        self.port = self._srv.getsockname()[1]
        self._conns = 0
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """mqtt:// URL of this broker."""
        return f"mqtt://127.0.0.1:{self.port}"

    def of(self, kind: str) -> list[Packet]:
        """Recorded packets of one kind."""
        with self._lock:
            return [p for p in self.packets if p.kind == kind]

    def snapshot(self) -> list[Packet]:
        """Every recorded packet."""
        with self._lock:
            return list(self.packets)

    def close(self) -> None:
        """Stop accepting."""
        self._closed = True
        self._srv.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                sock, _ = self._srv.accept()
            except OSError:
                return
            self._conns += 1
            threading.Thread(target=self._serve, args=(sock, self._conns), daemon=True).start()

    def _record(self, p: Packet) -> None:
        with self._lock:
            self.packets.append(p)

    def _serve(self, sock: socket.socket, conn: int) -> None:
        v5 = True
        publishes = 0
        buf = b""
        try:
            while True:
                while True:  # one whole packet in buf
                    if len(buf) >= 2:
                        try:
                            length, pos = _varint(buf, 1)
                        except IndexError:
                            length, pos = -1, 0
                        if length >= 0 and len(buf) >= pos + length:
                            break
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                ptype, body = buf[0] >> 4, buf[pos : pos + length]
                flags = buf[0] & 0x0F
                buf = buf[pos + length :]
                if ptype == 1:
                    info = self._connect(body)
                    v5 = info["level"] == 5
                    self._record(Packet("CONNECT", conn, info))
                    sock.sendall(b"\x20\x03\x00\x00\x00" if v5 else b"\x20\x02\x00\x00")
                elif ptype == 8:
                    (mid,) = struct.unpack_from("!H", body, 0)
                    p = 2
                    if v5:
                        _, p = _props(body, p)
                    topics = []
                    while p < len(body):
                        t, p = _str(body, p)
                        topics.append((t.decode(), body[p] & 0x03))
                        p += 1
                    self._record(Packet("SUBSCRIBE", conn, {"topics": topics}))
                    codes = bytes(1 for _ in topics)
                    rest = (b"\x00" if v5 else b"") + codes
                    sock.sendall(bytes([0x90, 2 + len(rest)]) + struct.pack("!H", mid) + rest)
                elif ptype == 3:
                    qos = (flags >> 1) & 0x03
                    topic, p = _str(body, 0)
                    mid = None
                    if qos:
                        (mid,) = struct.unpack_from("!H", body, p)
                        p += 2
                    if v5:
                        _, p = _props(body, p)
                    self._record(
                        Packet(
                            "PUBLISH",
                            conn,
                            {
                                "topic": topic.decode(),
                                "qos": qos,
                                "retain": bool(flags & 1),
                                "payload": body[p:],
                            },
                        )
                    )
                    if qos == 1 and mid is not None:
                        sock.sendall(b"\x40\x02" + struct.pack("!H", mid))
                    publishes += 1
                    drop = self.drop_after_publishes is not None and conn <= self.drop_connections
                    if drop and publishes >= self.drop_after_publishes:  # type: ignore[operator]
                        return
                elif ptype == 12:
                    sock.sendall(b"\xd0\x00")
                elif ptype == 14:
                    self._record(Packet("DISCONNECT", conn, {"reason": body[0] if body else 0}))
                    return
        except OSError:
            return
        finally:
            sock.close()

    @staticmethod
    def _connect(body: bytes) -> dict[str, object]:
        _name, p = _str(body, 0)
        level = body[p]
        cflags = body[p + 1]
        (keepalive,) = struct.unpack_from("!H", body, p + 2)
        p += 4
        props: dict[int, object] = {}
        if level == 5:
            props, p = _props(body, p)
        client_id, p = _str(body, p)
        info: dict[str, object] = {
            "level": level,
            "clean_start": bool(cflags & 0x02),
            "will": bool(cflags & 0x04),
            "will_qos": (cflags >> 3) & 0x03,
            "will_retain": bool(cflags & 0x20),
            "keepalive": keepalive,
            "session_expiry": props.get(0x11),
            "has_session_expiry": 0x11 in props,
            "client_id": client_id.decode(),
        }
        if cflags & 0x04:
            if level == 5:
                _, p = _props(body, p)
            topic, p = _str(body, p)
            payload, p = _str(body, p)
            info["will_topic"] = topic.decode()
            info["will_payload"] = payload
        return info
