"""agent.toml's schema: every key's section, type, default, range and meaning, as data.

One schema serves the agent (config.py validates against it), `config reference` and
`config defaults` (reference.py renders it), the installer and the build systems' config
generation. Plugin sections are `<kind>.<name>`, one per registered collector, detector
and output (a test keeps the two equal). This module is data only: importing it costs
next to nothing on the device.
"""

from __future__ import annotations

from collections import namedtuple

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any, NamedTuple

DEFAULT_PATH = "/etc/defender-agent/agent.toml"
DEFAULT_STATE_DIR = "/var/lib/defender-agent"

if TYPE_CHECKING:

    class Key(NamedTuple):
        """One configuration key: where it lives, its type, default, allowed values and meaning."""

        section: str
        name: str
        type: str  # "bool" | "int" | "float" | "str" | "list" | "enum" | "optbool" | "rules"
        default: Any
        doc: str
        min: float | None = None
        max: float | None = None
        choices: tuple[str, ...] = ()
        unit: str = ""

else:
    Key = namedtuple(
        "Key",
        "section name type default doc min max choices unit",
        defaults=(None, None, (), ""),
    )


_ENABLED_PLUGIN = "Unset: on when in the build; `true` on a build without it is an error."


def _priority(section: str, event: str, identity: str) -> Key:
    """The `priority` key of a collector whose events are aggregated (aggregate.py)."""
    return Key(
        section,
        "priority",
        "enum",
        "medium",
        f"Aggregation of `{event}` events: high, medium or low write identical ones "
        f"({identity}) as one record with a count per [aggregation] period (default "
        "medium, as the micro agent's); none writes each one at once. Detectors see "
        "every one at once either way.",
        choices=("none", "high", "medium", "low"),
    )


def _format(section: str) -> Key:
    """The `format` key of an output: the records' own JSON or Elastic Common Schema."""
    return Key(
        section,
        "format",
        "enum",
        "defender",
        "Record form: defender (the defender/1 JSON of docs/events.md) or ecs (Elastic "
        "Common Schema field names, for Filebeat, Fluent Bit, Vector or Logstash).",
        choices=("defender", "ecs"),
    )


SYSLOG_FACILITIES = (
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    *(f"local{n}" for n in range(8)),
)

SCHEMA: tuple[Key, ...] = (
    Key(
        "agent",
        "device_id",
        "str",
        "",
        "Device id in every record; empty = /etc/machine-id, else the host name.",
    ),
    Key(
        "agent",
        "state_dir",
        "str",
        DEFAULT_STATE_DIR,
        "Directory for state.json (follower offsets) and, by default, events.jsonl.",
    ),
    Key(
        "agent",
        "log_level",
        "enum",
        "info",
        "Level of the agent's own log on stderr.",
        choices=("debug", "info", "warning", "error"),
    ),
    Key(
        "agent",
        "heartbeat_interval",
        "float",
        300.0,
        "Seconds between heartbeat records.",
        min=1,
        max=86400,
        unit="s",
    ),
    Key(
        "agent",
        "statistics_interval",
        "float",
        3600.0,
        "Seconds between statistics records (emitted, dropped, skipped counts).",
        min=1,
        max=604800,
        unit="s",
    ),
    Key("collectors.login", "enabled", "optbool", None, _ENABLED_PLUGIN),
    Key(
        "collectors.login",
        "auth_logs",
        "list",
        ["/var/log/auth.log", "/var/log/secure", "/var/log/messages"],
        "Syslog files with sshd/dropbear/login messages; missing files are waited for.",
    ),
    Key(
        "collectors.login",
        "journal",
        "enum",
        "auto",
        "Read sshd/dropbear/login messages from the systemd journal (through journalctl) "
        "instead of auth_logs: on, off, or auto (when none of auth_logs exists, a journal "
        "does, and journalctl is installed).",
        choices=("auto", "on", "off"),
    ),
    Key(
        "collectors.login",
        "journalctl",
        "str",
        "journalctl",
        "The journalctl program (a PATH search without a slash).",
    ),
    Key(
        "collectors.login",
        "journal_directory",
        "str",
        "",
        "A journal directory to read (journalctl --directory); empty = the system journal.",
    ),
    Key(
        "collectors.login",
        "wtmp",
        "str",
        "/var/log/wtmp",
        "utmp-format log of logins and logouts; empty = do not follow.",
    ),
    Key(
        "collectors.login",
        "btmp",
        "str",
        "/var/log/btmp",
        "utmp-format log of failed logins; empty = do not follow.",
    ),
    Key(
        "collectors.login",
        "backend",
        "enum",
        "auto",
        "How to notice file changes: inotify, stat polling, or auto (inotify when available).",
        choices=("auto", "inotify", "poll"),
    ),
    Key(
        "collectors.login",
        "poll_interval",
        "float",
        1.0,
        "Seconds between stat polls when polling.",
        min=0.1,
        max=60,
        unit="s",
    ),
    Key(
        "collectors.login",
        "mode",
        "enum",
        "normal",
        "normal: failed logins, refused users and connections that end at the login; "
        "aggressive: also connections that end before any login attempt (key-exchange "
        "failures, `no matching ...`, scanners), one failure per connection.",
        choices=("normal", "aggressive"),
    ),
    Key(
        "collectors.login",
        "utmp_layout",
        "enum",
        "auto",
        "utmp record size: 384 (x86, x86_64, 32-bit ARM) or 400 (aarch64); auto = by CPU.",
        choices=("auto", "384", "400"),
    ),
    Key(
        "collectors.login",
        "dedup_hold",
        "float",
        2.0,
        "Seconds a btmp/wtmp record waits for the matching auth-log line before it is "
        "emitted alone (one attempt = one event).",
        min=0,
        max=30,
        unit="s",
    ),
    Key("collectors.sysinfo", "enabled", "optbool", None, _ENABLED_PLUGIN),
    Key(
        "collectors.sysinfo",
        "interval",
        "float",
        86400.0,
        "Seconds between system-information events (one is sent at start).",
        min=60,
        max=2592000,
        unit="s",
    ),
    Key("collectors.process", "enabled", "optbool", None, _ENABLED_PLUGIN),
    Key(
        "collectors.process",
        "backend",
        "enum",
        "auto",
        "Where programs started are seen: netlink (the kernel's process connector, every "
        "exec as it happens; CAP_NET_ADMIN before Linux 6.6), proc (a scan of /proc every "
        "poll_interval: a process shorter than that is missed), or auto (netlink when the "
        "kernel accepts it, else proc).",
        choices=("auto", "netlink", "proc"),
    ),
    Key(
        "collectors.process",
        "poll_interval",
        "float",
        1.0,
        "Seconds between /proc scans when polling (the first scan is a silent baseline).",
        min=0.1,
        max=60,
        unit="s",
    ),
    Key(
        "collectors.process",
        "exits",
        "bool",
        False,
        "Also send a process-exit event (pid, exit code or signal) for every process that "
        "ends: only when a detector asks for it.",
    ),
    Key(
        "collectors.process",
        "proc",
        "str",
        "/proc",
        "Where procfs is mounted (another place: an agent in a container watching its host "
        "through the host's /proc, in the host's PID namespace).",
    ),
    _priority("collectors.process", "process-exec", "executable, command line, user"),
    Key("collectors.network", "enabled", "optbool", None, _ENABLED_PLUGIN),
    Key(
        "collectors.network",
        "backend",
        "enum",
        "auto",
        "Where the TCP and UDP socket tables come from: sock_diag (netlink), proc "
        "(/proc/net text tables), or auto (sock_diag for each protocol the kernel's "
        "sock_diag handles, /proc/net for the others). Raw sockets always come from "
        "/proc/net/raw and raw6.",
        choices=("auto", "sock_diag", "proc"),
    ),
    Key(
        "collectors.network",
        "poll_interval",
        "float",
        5.0,
        "Seconds between looks at the socket tables. A connection opened and closed "
        "between two looks is seen only if one end lingers (TIME_WAIT). While an event "
        "source announces new connections (a SYN or SYN-ACK from connection_attempts' "
        "capture, a conntrack event), a look follows each announcement after 0.5 s but "
        "never sooner than this after the previous one.",
        min=1,
        max=3600,
        unit="s",
    ),
    Key(
        "collectors.network",
        "idle_poll_interval",
        "float",
        60.0,
        "Seconds between looks while nothing happens, when an event source announces "
        "new TCP connections (otherwise every poll_interval): a quiet device is not "
        "woken every poll_interval for nothing. What no event announces (a new "
        "listener, a UDP socket) is then seen within this.",
        min=1,
        max=3600,
        unit="s",
    ),
    Key(
        "collectors.network",
        "report_existing",
        "bool",
        False,
        "Report the connections already open at start as `connection` events; otherwise "
        "the first look is a silent baseline (the listen snapshot is always sent).",
    ),
    Key(
        "collectors.network",
        "owners",
        "bool",
        True,
        "Find the pid and executable of each new socket from /proc/*/fd (a scan only when "
        "a socket with an inode never looked up appears; other users' processes need "
        "CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE).",
    ),
    Key(
        "collectors.network",
        "max_connections",
        "int",
        4096,
        "Connections tracked at most; new ones beyond are neither tracked nor reported "
        "(counted as table-full).",
        min=16,
        max=1000000,
    ),
    Key(
        "collectors.network",
        "max_listen",
        "int",
        1024,
        "Listening sockets in the snapshot at most (more: counted, `truncated` set).",
        min=16,
        max=65536,
    ),
    Key(
        "collectors.network",
        "proc",
        "str",
        "/proc",
        "Where procfs is mounted: /proc/net tables and /proc/PID/fd owners.",
    ),
    Key(
        "collectors.network",
        "conntrack",
        "enum",
        "auto",
        "Connection tracking events (NETLINK_NETFILTER; CAP_NET_ADMIN, CONFIG_NF_CT_NETLINK): "
        "every new TCP and UDP flow of the host as it starts, however short, as a "
        "`connection` event. Only flows of the agent's network namespace, and only while a "
        "firewall rule or NAT there uses conntrack. auto: when the kernel allows it; on: "
        "the same, and an error in the log and check when it does not; off: never.",
        choices=("auto", "on", "off"),
    ),
    Key(
        "collectors.network",
        "connection_attempts",
        "enum",
        "auto",
        "`connection-attempt` events for inbound TCP SYNs to ports nothing listens on (a "
        "packet socket with a SYN filter; CAP_NET_RAW, CONFIG_PACKET). auto: when the "
        "kernel allows it; on: the same, and an error in the log and check when it does "
        "not; off: never.",
        choices=("auto", "on", "off"),
    ),
    Key(
        "collectors.network",
        "attempt_rate",
        "int",
        200,
        "`connection-attempt` events per second at most (a token bucket with as many in "
        "reserve); the rest are counted as attempt-rate-limited.",
        min=1,
        max=100000,
    ),
    _priority(
        "collectors.network",
        "connection` and `connection-attempt",
        "direction, protocol, addresses, remote port; an inbound one's local port; an "
        "attempt's addresses and local port",
    ),
    Key("detectors.brute_force", "enabled", "optbool", None, _ENABLED_PLUGIN),
    Key(
        "detectors.brute_force",
        "max_failures",
        "int",
        5,
        "Failed logins from one source within `window` that raise an alert.",
        min=1,
        max=1000,
    ),
    Key(
        "detectors.brute_force",
        "window",
        "float",
        60.0,
        "Seconds the failures must fall within; also the quiet time before a new alert.",
        min=1,
        max=86400,
        unit="s",
    ),
    Key(
        "detectors.brute_force",
        "success_window",
        "float",
        600.0,
        "A login from a source with `max_failures` failures this many seconds before it "
        "raises BruteForceSuccess.",
        min=1,
        max=86400,
        unit="s",
    ),
    Key(
        "detectors.brute_force",
        "slow_max_failures",
        "int",
        10,
        "BruteForceSlow: failed logins from one source within `slow_window` (0: off). "
        "One guess every 30 s never makes the fast rule's 5 in a minute; this catches it.",
        min=0,
        max=10000,
    ),
    Key(
        "detectors.brute_force",
        "slow_window",
        "float",
        600.0,
        "Seconds the slow rule's failures must fall within.",
        min=60,
        max=604800,
        unit="s",
    ),
    Key(
        "detectors.brute_force",
        "enumeration_users",
        "int",
        5,
        "UserEnumeration: distinct user names tried from one source within "
        "`enumeration_window` (0: off). People who mistype try one or two names.",
        min=0,
        max=1000,
    ),
    Key(
        "detectors.brute_force",
        "enumeration_window",
        "float",
        600.0,
        "Seconds the distinct user names must fall within.",
        min=10,
        max=604800,
        unit="s",
    ),
    Key(
        "detectors.brute_force",
        "max_sources",
        "int",
        4096,
        "Sources tracked at once; the oldest is evicted (and counted) beyond this.",
        min=16,
        max=1000000,
    ),
    Key(
        "detectors.brute_force",
        "max_bytes",
        "int",
        1048576,
        "Memory the source table may use; the least recently active source is evicted "
        "(and counted) beyond it, so no flood of sources or long user names can grow it.",
        min=65536,
        max=1 << 30,
        unit="bytes",
    ),
    Key("detectors.custom", "enabled", "optbool", None, _ENABLED_PLUGIN),
    Key(
        "detectors.custom",
        "rules",
        "rules",
        [],
        "Custom alert rules, one [[detectors.custom.rules]] table each: name, type, "
        "severity, description and the type's fields (docs/alerts.md).",
    ),
    Key(
        "aggregation",
        "high",
        "float",
        1800.0,
        "Seconds between writes of aggregated events of high-priority collectors (identical "
        "events in between become one record with a count).",
        min=1,
        max=604800,
        unit="s",
    ),
    Key(
        "aggregation",
        "medium",
        "float",
        7200.0,
        "Seconds between writes of aggregated events of medium-priority collectors.",
        min=1,
        max=604800,
        unit="s",
    ),
    Key(
        "aggregation",
        "low",
        "float",
        86400.0,
        "Seconds between writes of aggregated events of low-priority collectors.",
        min=1,
        max=604800,
        unit="s",
    ),
    Key(
        "aggregation",
        "max_entries",
        "int",
        256,
        "Distinct events held per priority; a full table writes its oldest entry early.",
        min=1,
        max=65536,
    ),
    Key("outputs.file", "enabled", "optbool", None, _ENABLED_PLUGIN),
    Key("outputs.file", "path", "str", "", "JSON-lines file; empty = <state_dir>/events.jsonl."),
    Key(
        "outputs.file",
        "max_bytes",
        "int",
        1048576,
        "Rotate the file when it would grow beyond this size.",
        min=4096,
        max=1 << 34,
        unit="bytes",
    ),
    Key(
        "outputs.file",
        "backups",
        "int",
        3,
        "Rotated files kept (events.jsonl.1 ...).",
        min=0,
        max=20,
    ),
    _format("outputs.file"),
    Key(
        "outputs.stdout",
        "enabled",
        "bool",
        False,
        "Also write records to standard output (`run --stdout` turns it on).",
    ),
    _format("outputs.stdout"),
    Key(
        "outputs.syslog",
        "enabled",
        "bool",
        False,
        "Send records as syslog messages (docs/outputs.md); off unless set, like every "
        "output that sends data off the agent.",
    ),
    Key(
        "outputs.syslog",
        "transport",
        "enum",
        "unix",
        "unix (datagrams to the local socket at `address`), udp, tcp (RFC 6587 octet "
        "counting) or tls (RFC 5425) to the collector at `address`:`port`.",
        choices=("unix", "udp", "tcp", "tls"),
    ),
    Key(
        "outputs.syslog",
        "address",
        "str",
        "/dev/log",
        "The local socket (unix), else the collector's address or host name (a name is "
        "resolved at each connection attempt, which waits for DNS: prefer an address).",
    ),
    Key(
        "outputs.syslog",
        "port",
        "int",
        0,
        "The collector's port; 0 = 514 for udp and tcp, 6514 for tls.",
        min=0,
        max=65535,
    ),
    Key(
        "outputs.syslog",
        "message_format",
        "enum",
        "auto",
        "rfc5424 (header, structured data, MSG) or rfc3164 (`<PRI>Mmm dd hh:mm:ss "
        "defender-agent[pid]: MSG`, as syslog(3) writes it, without structured data); "
        "auto = rfc3164 on the unix socket (what journald and busybox syslogd parse), "
        "rfc5424 over the network.",
        choices=("auto", "rfc5424", "rfc3164"),
    ),
    Key(
        "outputs.syslog",
        "facility",
        "enum",
        "daemon",
        "Syslog facility of every message (auth and authpriv land in the auth log the "
        "login collector may read).",
        choices=SYSLOG_FACILITIES,
    ),
    Key(
        "outputs.syslog",
        "enterprise_id",
        "int",
        32473,
        "The number after `defender@` in the structured data's SD-ID: your organisation's "
        "IANA Private Enterprise Number; the default is RFC 5612's documentation number.",
        min=1,
        max=2147483647,
    ),
    _format("outputs.syslog"),
    Key(
        "outputs.syslog",
        "alerts_only",
        "bool",
        False,
        "Send only alerts, not events, heartbeats and statistics.",
    ),
    Key(
        "outputs.syslog",
        "max_message",
        "int",
        8192,
        "Bytes of one message at most (RFC 5425 receivers take 8192; rsyslog's default "
        "maxMessageSize is 8 KiB); a longer MSG is cut and counted as truncated.",
        min=480,
        max=65000,
        unit="bytes",
    ),
    Key(
        "outputs.syslog",
        "queue_max",
        "int",
        1000,
        "Records kept while the collector cannot be reached; the oldest is dropped (and "
        "counted) beyond this or `queue_bytes`.",
        min=1,
        max=1000000,
    ),
    Key(
        "outputs.syslog",
        "queue_bytes",
        "int",
        1048576,
        "Bytes of messages kept while the collector cannot be reached.",
        min=65536,
        max=1 << 30,
        unit="bytes",
    ),
    Key(
        "outputs.syslog",
        "tls_ca",
        "str",
        "",
        "tls: PEM file of the CAs that sign the collector's certificate; empty = the "
        "system's store. The certificate must name `tls_server_name`.",
    ),
    Key(
        "outputs.syslog",
        "tls_server_name",
        "str",
        "",
        "tls: the name the collector's certificate must carry; empty = `address`.",
    ),
    Key(
        "outputs.syslog",
        "tls_cert",
        "str",
        "",
        "tls: PEM file of the agent's client certificate (and its key, unless `tls_key`); "
        "empty = none.",
    ),
    Key("outputs.syslog", "tls_key", "str", "", "tls: PEM file of the client certificate's key."),
)

SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(k.section for k in SCHEMA))
