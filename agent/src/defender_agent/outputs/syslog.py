"""Syslog output: every record as a syslog message, to /dev/log or a remote collector.

Transports: `unix` (a datagram to the local /dev/log, where journald or the device's
syslog daemon takes it), `udp` (RFC 5426), `tcp` (RFC 6587 octet counting) and `tls`
(RFC 5425: octet counting inside TLS, the collector's certificate checked against a CA
bundle, an optional client certificate). Messages are RFC 5424: the header (the record's
`time`, host, `defender-agent`, pid, the record type as MSGID), one structured-data
element `[defender@<enterprise_id> ...]` with the record's key fields, and the record's
JSON line (`defender/1` or ECS) as MSG. On the unix socket the default is the form
syslog(3) writes (`<PRI>Mmm dd hh:mm:ss defender-agent[pid]: MSG`), the one journald,
busybox syslogd and rsyslog's imuxsock parse; `message_format` chooses either.

The loop is never blocked: sockets are non-blocking, a connection or TLS handshake in
progress is looked at again by a short timer, and a collector that is down is tried
again after 1 s, doubling up to 60 s. Until then records wait in a bounded queue (records
and bytes); beyond it the oldest is dropped and counted, as outputs/file.py does. Before
each send on a stream the socket is checked for the collector's close (a restarted
rsyslog closes its end first), so records are not written into a dead connection. What
TCP had accepted but the collector never read when it died is lost: syslog over TCP has
no acknowledgements (RELP has; not implemented).

`socket` and `ssl` are imported only for TLS (socket.py alone costs ~1.5 MiB of RSS);
the other transports use the C module `_socket`, as linux/netlink.py does.
"""

from __future__ import annotations

import os
import select
from collections import deque

from defender_agent import log as _log
from defender_agent.model import rfc3339

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any, Callable

    from defender_agent.loop import Timer
    from defender_agent.model import Record
    from defender_agent.plugins import Context

log = _log.get(__name__)

# RFC 5424 section 6.2.1: facility codes by the names syslog.conf uses
FACILITIES = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    **{f"local{n}": 16 + n for n in range(8)},
}
# Alert severities and record types as syslog severities (2 crit, 3 err, 4 warning,
# 5 notice, 6 info); an alert of unknown severity is a warning.
ALERT_SEVERITY = {"high": 2, "medium": 3, "low": 4}
TYPE_SEVERITY = {"alert": 4, "recommendation": 5}
INFO = 6

APP_NAME = b"defender-agent"
# The payload keys carried as SD-PARAMs, when present and not null: what a syslog
# filter or a SIEM rule selects on without parsing MSG.
SD_KEYS = (
    "event",
    "name",
    "severity",
    "source",
    "user",
    "users",
    "service",
    "pid",
    "executable",
    "direction",
    "protocol",
    "remote_address",
    "remote_port",
    "local_port",
    "count",
)
SD_VALUE_MAX = 128  # characters of one SD-PARAM value, before escaping
HEADER_MAX = 512  # the header and structured data may take at most this much
DEFAULT_PORTS = {"udp": 514, "tcp": 514, "tls": 6514}
CONNECT_TIMEOUT = 10.0
PUMP_DELAY = 0.05  # a connection or handshake in progress, or a full send buffer
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 60.0
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10
SOCK_STREAM, SOCK_DGRAM = 1, 2
SOL_SOCKET, SO_ERROR = 1, 4
AI_NUMERICHOST = 4
EPERM = 1  # errno.EPERM: a connect() a packet filter refuses
EINPROGRESS, EAGAIN, EISCONN = 115, 11, 106
POLLIN, POLLOUT, POLLERR, POLLHUP = 0x1, 0x4, 0x8, 0x10


def escape_value(text: str) -> str:
    """An SD-PARAM value (RFC 5424 6.3.3): `"`, `\\` and `]` escaped with a backslash;
    control characters written `\\xNN` (a receiver keeps a backslash before any other
    character as it is), capped at SD_VALUE_MAX characters, a cut one ending in `...`."""
    if len(text) > SD_VALUE_MAX:
        text = text[: SD_VALUE_MAX - 3] + "..."
    out = text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")
    if any(c < " " or c == "\x7f" for c in out):
        out = "".join(f"\\x{ord(c):02x}" if c < " " or c == "\x7f" else c for c in out)
    return out


def printable_ascii(text: str, limit: int) -> str:
    """A header field (HOSTNAME, SD-ID): PRINTUSASCII only (33-126), at most `limit`;
    nil (`-`) when nothing is left."""
    out = "".join(c for c in text if "!" <= c <= "~")[:limit]
    return out or "-"


def structured_data(sd_id: str, device_id: str, payload: dict[str, Any]) -> str:
    params = [f'device_id="{escape_value(device_id)}"']
    for key in SD_KEYS:
        value = payload.get(key)
        if value is None or isinstance(value, dict):
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, list):
            text = ",".join(str(v) for v in value)
        else:
            text = str(value)
        params.append(f'{key}="{escape_value(text)}"')
    return f"[{sd_id} {' '.join(params)}]"


def severity(record: Record) -> int:
    if record.type == "alert":
        return ALERT_SEVERITY.get(str(record.payload.get("severity")), 4)
    return TYPE_SEVERITY.get(record.type, INFO)


def rfc3164_stamp(ts: float) -> str:
    """`Mmm dd hh:mm:ss` in local time, as syslog(3) writes it (no locale involved)."""
    import time

    tm = time.localtime(ts)
    return (
        f"{_MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d} {tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"
    )


class SyslogOutput:
    name = "syslog"

    def __init__(
        self,
        ctx: Context,
        transport: str = "unix",
        address: str = "/dev/log",
        port: int = 0,
        *,
        facility: str = "daemon",
        message_format: str = "auto",
        enterprise_id: int = 32473,
        alerts_only: bool = False,
        max_message: int = 8192,
        queue_max: int = 1000,
        queue_bytes: int = 1 << 20,
        tls: dict[str, str] | None = None,
        line: Callable[[Record], str] | None = None,
    ) -> None:
        self.ctx = ctx
        self.transport = transport
        self.address = address
        self.port = port or DEFAULT_PORTS.get(transport, 0)
        self.facility = FACILITIES[facility]
        if message_format == "auto":
            message_format = "rfc3164" if transport == "unix" else "rfc5424"
        self.rfc5424 = message_format == "rfc5424"
        self.stream = transport in ("tcp", "tls")
        self.sd_id = printable_ascii(f"defender@{enterprise_id}", 32)
        self.alerts_only = alerts_only
        self.max_message = max_message
        self.queue_max = queue_max
        self.queue_bytes = queue_bytes
        self.tls = tls or {}
        self._line = line  # the ECS form, when configured; else the pipeline's line
        self.needs_line = line is None
        self.hostname = printable_ascii(os.uname().nodename, 255)
        self.pid = os.getpid()
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.sent = 0  # bytes of the queue's first frame already sent (streams)
        self.sock: Any = None
        self.state = "closed"  # closed | connecting | handshake | ready
        self.connect_started = 0.0
        self.next_attempt = 0.0
        self.backoff = BACKOFF_FIRST
        self.failing = False
        self.timer: Timer | None = None
        self.ssl_context: Any = None
        self.counts = {
            "written": 0,
            "dropped": 0,
            "truncated": 0,
            "errors": 0,
            "connections": 0,
        }

    # --- plugin contract ----------------------------------------------------------
    def start(self) -> None:
        """Connect now: a collector that cannot be reached shows in the log at once."""
        self._pump()

    def stop(self) -> None:
        """Send what waits, as far as the socket takes it without waiting, and close."""
        if self.queue and self.state == "ready":
            self._send_queue()
        if self.queue:
            log.warning("syslog: %d records not sent at stop", len(self.queue))
        self._close()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def save_state(self) -> dict[str, Any]:
        return {}

    def statistics(self) -> dict[str, int]:
        return {**self.counts, "backlog": len(self.queue)}

    def write(self, record: Record, line: str) -> None:
        if self.alerts_only and record.type != "alert":
            return
        if self._line is not None:
            line = self._line(record)
        self._keep(self.format(record, line))
        self._pump()

    def retry(self) -> None:
        self._pump()

    def reopen(self) -> None:
        pass

    # --- messages -----------------------------------------------------------------
    def format(self, record: Record, line: str) -> bytes:
        """One message (with its octet count on a stream), MSG cut to max_message."""
        pri = self.facility * 8 + severity(record)
        when = record.time if record.time is not None else (record.observed or 0.0)
        if self.rfc5424:
            sd = structured_data(self.sd_id, self.ctx.device_id, record.payload)
            head = (
                f"<{pri}>1 {rfc3339(when)} {self.hostname} defender-agent {self.pid} {record.type} "
            ).encode("ascii")
            sd_bytes = sd.encode("utf-8", "backslashreplace")
            if len(head) + len(sd_bytes) > HEADER_MAX:
                sd_bytes = b"-"  # a payload of long names: MSG still has all of it
            head += sd_bytes + b" "
        else:
            head = f"<{pri}>{rfc3164_stamp(when)} defender-agent[{self.pid}]: ".encode("ascii")
        body = line.encode("utf-8", "backslashreplace")
        room = self.max_message - len(head)
        if len(body) > room:
            body = body[: max(room, 0)]
            self.counts["truncated"] += 1
        message = head + body
        if self.stream:
            return b"%d " % len(message) + message
        return message

    # --- the queue ----------------------------------------------------------------
    def _keep(self, frame: bytes) -> None:
        self.queue.append(frame)
        self.queued_bytes += len(frame)
        while len(self.queue) > self.queue_max or self.queued_bytes > self.queue_bytes:
            if self.sent and len(self.queue) > 1:  # half sent: its rest goes first
                head = self.queue.popleft()
                dropped = self.queue.popleft()
                self.queue.appendleft(head)
            else:
                dropped = self.queue.popleft()
                self.sent = 0
            self.queued_bytes -= len(dropped)
            self.counts["dropped"] += 1  # the oldest goes: newer alerts matter more

    def _pump(self) -> None:
        """Move as far as possible without waiting; arm a timer for what must wait."""
        now = self.ctx.clock.monotonic()
        if self.state == "closed":
            if now < self.next_attempt:
                self._arm(self.next_attempt - now)
                return
            self._connect(now)
        if self.state == "connecting":
            self._finish_connect(now)
        if self.state == "handshake":
            self._handshake()
        if self.state == "ready" and self.queue:
            self._send_queue()
        if self.state in ("connecting", "handshake") or (self.state == "ready" and self.queue):
            self._arm(PUMP_DELAY)
        elif self.state == "closed" and self.queue:
            self._arm(max(self.next_attempt - now, PUMP_DELAY))

    def _arm(self, delay: float) -> None:
        deadline = self.ctx.clock.monotonic() + delay
        if self.timer is not None and not self.timer.cancelled:
            if self.timer.deadline <= deadline:
                return
            self.timer.cancel()
        self.timer = self.ctx.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        self._pump()

    # --- the connection -----------------------------------------------------------
    def _connect(self, now: float) -> None:
        import _socket

        sock: Any = None
        target: Any
        try:
            if self.transport == "unix":
                family, target = AF_UNIX, self.address
            else:
                family, target = self._resolve()
            kind = SOCK_STREAM if self.stream else SOCK_DGRAM
            if self.transport == "tls":
                import socket  # only for TLS: ssl wraps socket.socket objects

                sock = socket.socket(family, kind)
            else:
                sock = _socket.socket(family, kind)
            sock.setblocking(False)
            err = sock.connect_ex(target)
            if err not in (0, EINPROGRESS):
                raise OSError(err, os.strerror(err))
        except OSError as exc:
            if sock is not None:
                sock.close()
            self._failed("connect", exc)
            return
        self.sock = sock
        self.state = "connecting"
        self.connect_started = now

    def _resolve(self) -> tuple[int, tuple[Any, ...]]:
        """The collector's address: a literal address at once; a name through the
        resolver (which waits as long as DNS takes: prefer an address)."""
        import _socket

        kind = SOCK_STREAM if self.stream else SOCK_DGRAM
        try:
            infos = _socket.getaddrinfo(self.address, self.port, 0, kind, 0, AI_NUMERICHOST)
        except OSError:
            try:
                infos = _socket.getaddrinfo(self.address, self.port, 0, kind)
            except OSError as exc:  # gaierror: errno is the EAI_ code
                raise OSError(0, f"cannot resolve {self.address}: {exc.args[-1]}") from None
        family, _kind, _proto, _name, target = infos[0]
        return int(family), target

    def _finish_connect(self, now: float) -> None:
        poller = select.poll()
        poller.register(self.sock.fileno(), POLLOUT)
        if not poller.poll(0):
            if now - self.connect_started > CONNECT_TIMEOUT:
                self._failed("connect", OSError(110, "connection timed out"))
            return
        err = self.sock.getsockopt(SOL_SOCKET, SO_ERROR)
        if err not in (0, EISCONN):
            self._failed("connect", OSError(err, os.strerror(err)))
            return
        if self.transport == "tls":
            try:
                self._start_tls()
            except (OSError, ValueError) as exc:
                self._failed("tls setup", exc)
                return
            self.state = "handshake"
        else:
            self._connected()

    def _start_tls(self) -> None:
        import ssl

        if self.ssl_context is None:
            cafile = self.tls.get("ca") or None
            context = ssl.create_default_context(cafile=cafile)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            if self.tls.get("cert"):
                context.load_cert_chain(self.tls["cert"], self.tls.get("key") or None)
            self.ssl_context = context
        server_name = self.tls.get("server_name") or self.address
        self.sock = self.ssl_context.wrap_socket(
            self.sock, server_hostname=server_name, do_handshake_on_connect=False
        )

    def _handshake(self) -> None:
        import ssl

        try:
            self.sock.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            if self.ctx.clock.monotonic() - self.connect_started > CONNECT_TIMEOUT:
                self._failed("tls handshake", OSError(110, "handshake timed out"))
            return
        except (OSError, ValueError) as exc:  # SSLError (a bad certificate) is an OSError
            self._failed("tls handshake", exc)
            return
        self._connected()

    def _connected(self) -> None:
        self.state = "ready"
        self.counts["connections"] += 1
        self.backoff = BACKOFF_FIRST
        self.sent = 0  # a frame cut by the last connection's end is sent again whole
        if self.failing:
            self.failing = False
            log.warning("syslog: sending to %s again", self._where())

    def _peer_closed(self) -> bool:
        """A stream collector never sends; its end readable means it closed (or, for TLS,
        sent a session ticket, which the read consumes)."""
        poller = select.poll()
        poller.register(self.sock.fileno(), POLLIN)
        events = poller.poll(0)
        if not events:
            return False
        if events[0][1] & (POLLERR | POLLHUP):
            return True
        try:
            data = self.sock.recv(4096)
        except OSError as exc:
            return not _would_block(exc)
        return not data

    def _send_queue(self) -> None:
        if self.stream and self._peer_closed():
            self._failed("send", OSError(104, "the collector closed the connection"))
            return
        while self.queue:
            frame = self.queue[0]
            try:
                if self.stream:
                    done = self.sock.send(memoryview(frame)[self.sent :])
                else:
                    done = self.sock.send(frame)
            except OSError as exc:
                if _would_block(exc):
                    return  # the timer comes back
                if not self.stream and exc.errno == 90:  # EMSGSIZE: it will never fit
                    self._pop()
                    self.counts["dropped"] += 1
                    continue
                self._failed("send", exc)
                return
            if self.stream and self.sent + done < len(frame):
                self.sent += done
                continue
            self._pop()
            self.counts["written"] += 1

    def _pop(self) -> None:
        frame = self.queue.popleft()
        self.queued_bytes -= len(frame)
        self.sent = 0

    def _failed(self, step: str, exc: Exception) -> None:
        self.counts["errors"] += 1
        self._close()
        self.next_attempt = self.ctx.clock.monotonic() + self.backoff
        if not self.failing:
            self.failing = True
            why = getattr(exc, "strerror", None) or str(exc)
            if getattr(exc, "errno", 0) == EPERM and self.transport != "unix":
                # systemd's IPAddressDeny=any (the shipped unit) refuses every connect()
                why += (
                    "; under systemd, the unit's IPAddressDeny=any refuses it: allow the "
                    "collector with IPAddressAllow= in a drop-in (docs/outputs.md)"
                )
            log.error(
                "syslog: %s %s failed (%s); keeping up to %d records, trying again",
                step,
                self._where(),
                why,
                self.queue_max,
            )
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)
        if self.queue:
            self._arm(self.next_attempt - self.ctx.clock.monotonic())

    def _close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
        self.state = "closed"

    def _where(self) -> str:
        if self.transport == "unix":
            return self.address
        return f"{self.transport}://{self.address}:{self.port}"


def _would_block(exc: OSError) -> bool:
    """EAGAIN, or TLS wanting to read or write first (ssl.SSLWant*Error, told apart by
    name: importing ssl for the check would cost its RSS on every transport)."""
    return exc.errno == EAGAIN or type(exc).__name__ in ("SSLWantReadError", "SSLWantWriteError")


def create(ctx: Context, section: dict[str, Any], state: dict[str, Any]) -> SyslogOutput:
    from defender_agent.outputs import ecs_formatter

    return SyslogOutput(
        ctx,
        str(section["transport"]),
        str(section["address"]),
        int(section["port"]),
        facility=str(section["facility"]),
        message_format=str(section["message_format"]),
        enterprise_id=int(section["enterprise_id"]),
        alerts_only=bool(section["alerts_only"]),
        max_message=int(section["max_message"]),
        queue_max=int(section["queue_max"]),
        queue_bytes=int(section["queue_bytes"]),
        tls={
            "ca": str(section["tls_ca"]),
            "cert": str(section["tls_cert"]),
            "key": str(section["tls_key"]),
            "server_name": str(section["tls_server_name"]),
        },
        line=ecs_formatter(ctx, section),
    )


def describe(section: dict[str, Any]) -> list[str]:
    transport = section["transport"]
    if transport == "unix":
        where = f"{section['address']} (local datagrams)"
    else:
        port = section["port"] or DEFAULT_PORTS[transport]
        where = f"{transport}://{section['address']}:{port}"
    fmt = section["message_format"]
    if fmt == "auto":
        fmt = "rfc3164" if transport == "unix" else "rfc5424"
    lines = [
        f"{where}, {fmt} messages, facility {section['facility']}, "
        f"{'alerts only' if section['alerts_only'] else 'every record'} "
        f"as {section['format']} JSON",
        f"queue: {section['queue_max']} records, {section['queue_bytes']} bytes",
    ]
    if transport == "tls":
        lines.append(
            f"TLS: CA {section['tls_ca'] or 'the system store'}, client certificate "
            f"{section['tls_cert'] or 'none'}"
        )
    return lines
