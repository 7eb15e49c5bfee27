"""Custom alert rules: each type fires on a positive case and stays silent on a near miss;
bad rules are one-line configuration errors; repeats are suppressed; counting rules
window on event time, checked on virtual time."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from defender_agent import config
from defender_agent.agent import Agent
from defender_agent.detectors import custom
from defender_agent.model import Record

TYPE_CHECKING = False
if TYPE_CHECKING:  # a test module cannot import conftest at run time (importlib mode)
    from conftest import Collect

T0 = 1_795_766_400.0


def load(*rules: dict[str, Any]) -> list[dict[str, Any]]:
    cfg = config.validate({"detectors": {"custom": {"rules": list(rules)}}}, "agent.toml")
    return cfg.section("detectors.custom")["rules"]


@pytest.fixture
def running(
    collecting_agent: Callable[..., tuple[Agent, Any, Collect]],
) -> Callable[..., tuple[Agent, Collect]]:
    """A started agent with the custom rules `rules`, and an output that collects its alerts."""

    def start(*rules: dict[str, Any]) -> tuple[Agent, Collect]:
        agent, _det, out = collecting_agent(T0, custom, {"rules": load(*rules)})
        return agent, out

    return start


def emit(agent: Agent, when: float, **payload: Any) -> None:
    agent.context("collectors", "test").emit(Record("event", payload, when))
    agent.run_once(0)


def exec_(agent: Agent, when: float, exe: str) -> None:
    emit(agent, when, event="process-exec", executable=exe, cmdline=exe, pid=7, user="root")


def conn(agent: Agent, when: float, direction: str, remote: str, port: int = 443) -> None:
    local_port = 40000 if direction == "out" else port
    emit(
        agent,
        when,
        event="connection",
        direction=direction,
        protocol="tcp",
        family=4 if "." in remote else 6,
        local_address="192.0.2.10",
        local_port=local_port,
        remote_address=remote,
        remote_port=port if direction == "out" else 50000,
    )


def names(out: Collect) -> list[str]:
    return [a["name"] for a in out.alerts]


def test_process_allowlist_and_denylist(running: Callable[..., tuple[Agent, Collect]]) -> None:
    agent, out = running(
        {"name": "only-ours", "type": "process-not-allowed", "allow": ["/usr/bin/*", "/sbin/init"]},
        {"name": "no-telnet", "type": "process-denied", "deny": ["*/telnetd"], "severity": "high"},
    )
    exec_(agent, T0, "/usr/bin/python3")  # near miss for both
    exec_(agent, T0 + 1, "/sbin/init")
    assert out.alerts == []
    exec_(agent, T0 + 2, "/tmp/.x/miner")
    exec_(agent, T0 + 3, "/usr/sbin/telnetd")
    assert names(out) == ["only-ours", "only-ours", "no-telnet"]
    assert out.alerts[0]["executable"] == "/tmp/.x/miner"
    assert out.alerts[2]["severity"] == "high" and out.alerts[2]["rule"] == "process-denied"


def test_repeats_of_one_finding_are_suppressed_for_the_rules_period(
    running: Callable[..., tuple[Agent, Collect]],
) -> None:
    agent, out = running(
        {"name": "deny-nc", "type": "process-denied", "deny": ["/bin/nc"], "suppress": 60},
    )
    for n in range(5):
        exec_(agent, T0 + n, "/bin/nc")
    exec_(agent, T0 + 61, "/bin/nc")
    assert names(out) == ["deny-nc", "deny-nc"]


def test_outbound_allow_and_deny_cidrs_with_ports(
    running: Callable[..., tuple[Agent, Collect]],
) -> None:
    agent, out = running(
        {"name": "lan-only", "type": "outbound-not-allowed", "allow_cidrs": ["192.0.2.0/24"]},
        {
            "name": "no-c2",
            "type": "outbound-denied",
            "deny_cidrs": ["203.0.113.0/24", "2001:db8::/32"],
            "ports": ["tcp/443", 8443],
        },
    )
    conn(agent, T0, "out", "192.0.2.99")  # near miss: allowed, not denied
    conn(agent, T0 + 1, "out", "203.0.113.5", port=80)  # denied range, other port
    assert names(out) == ["lan-only"]  # 203.0.113.5 is outside the LAN
    conn(agent, T0 + 2, "out", "203.0.113.6", port=443)
    conn(agent, T0 + 3, "out", "2001:db8::7", port=8443)
    assert names(out) == ["lan-only", "lan-only", "no-c2", "lan-only", "no-c2"]


def test_inbound_from_outside_the_allowed_networks(
    running: Callable[..., tuple[Agent, Collect]],
) -> None:
    agent, out = running(
        {
            "name": "mgmt-only",
            "type": "inbound-not-allowed",
            "allow_cidrs": ["198.51.100.0/24"],
            "ports": [22],
        }
    )
    conn(agent, T0, "in", "198.51.100.4", port=22)  # near miss
    conn(agent, T0, "in", "203.0.113.9", port=80)  # other port: not this rule's
    conn(agent, T0, "out", "203.0.113.9", port=22)  # outbound: not this rule's
    assert out.alerts == []
    conn(agent, T0 + 1, "in", "203.0.113.9", port=22)
    assert names(out) == ["mgmt-only"] and out.alerts[0]["remote_address"] == "203.0.113.9"


def test_login_by_a_user_not_allowed(running: Callable[..., tuple[Agent, Collect]]) -> None:
    agent, out = running({"name": "admins", "type": "login-not-allowed", "allow_users": ["root"]})
    emit(agent, T0, event="login", user="root", source="192.0.2.1", service="sshd")
    emit(agent, T0, event="login-failed", user="mallory", source="192.0.2.1", service="sshd")
    assert out.alerts == []
    emit(agent, T0 + 1, event="login", user="mallory", source="192.0.2.1", service="sshd")
    assert names(out) == ["admins"] and out.alerts[0]["user"] == "mallory"


def test_listening_port_not_allowed_alerts_once_while_it_listens(
    running: Callable[..., tuple[Agent, Collect]],
) -> None:
    agent, out = running(
        {"name": "ports", "type": "listen-port-not-allowed", "allow_ports": ["tcp/22", "udp/68"]}
    )

    def snapshot(when: float, *ports: tuple[str, int]) -> None:
        sockets = [
            {"protocol": p, "address": "0.0.0.0", "port": n, "pid": 9, "executable": "/x"}
            for p, n in ports
        ]
        emit(agent, when, event="listen", sockets=sockets)

    snapshot(T0, ("tcp", 22), ("udp", 68))  # near miss
    assert out.alerts == []
    snapshot(T0 + 1, ("tcp", 22), ("tcp", 23))
    snapshot(T0 + 2, ("tcp", 22), ("tcp", 23))  # still listening: no second alert
    snapshot(T0 + 3, ("tcp", 22))
    snapshot(T0 + 4, ("tcp", 22), ("tcp", 23))  # opened again: a new finding
    assert names(out) == ["ports", "ports"] and out.alerts[0]["port"] == 23


def test_connection_count_out_of_range_per_window(
    running: Callable[..., tuple[Agent, Collect]],
) -> None:
    agent, out = running(
        {"name": "chatty", "type": "connections-out-of-range", "window": 60, "min": 1, "max": 3}
    )
    for n in range(2):
        conn(agent, T0 + n, "out", "192.0.2.5")
    agent.advance(60)  # 2 in the window: in range
    assert out.alerts == []
    for n in range(5):
        conn(agent, T0 + 61 + n, "out", "192.0.2.5")
    agent.advance(60)
    assert names(out) == ["chatty"] and out.alerts[0]["count"] == 5
    agent.advance(60)  # silence: below min, but the excursion already alerted...
    assert len(out.alerts) == 1
    conn(agent, T0 + 200, "out", "192.0.2.5")
    agent.advance(60)  # back in range: re-armed
    agent.advance(60)  # 0 < min: a new excursion
    assert names(out) == ["chatty", "chatty"] and out.alerts[1]["count"] == 0


def test_failed_local_logins_out_of_range_counts_local_ones_only(
    running: Callable[..., tuple[Agent, Collect]],
) -> None:
    agent, out = running(
        {"name": "console", "type": "local-login-failures-out-of-range", "window": 300, "max": 2}
    )
    for n in range(5):  # remote failures are the brute-force detector's
        emit(agent, T0 + n, event="login-failed", user="root", source="192.0.2.1", service="sshd")
    for n in range(3):
        emit(
            agent,
            T0 + n,
            event="login-failed",
            user="root",
            source=None,
            service="login",
            tty="ttyS0",
        )
    agent.advance(300)
    assert names(out) == ["console"] and out.alerts[0]["count"] == 3


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"type": "process-denied", "deny": ["/x"]}, "rule 1: name: missing"),
        ({"name": "a", "type": "process-banned"}, "rule 1 'a': type: expected one of"),
        ({"name": "a", "type": "process-denied"}, "rule 1 'a': deny: missing"),
        (
            {"name": "a", "type": "process-denied", "deny": "/x"},
            "deny: expected a list of non-empty strings",
        ),
        (
            {"name": "a", "type": "process-denied", "deny": ["/x"], "allow": ["/y"]},
            "allow: not a field of a process-denied rule",
        ),
        (
            {"name": "a", "type": "outbound-denied", "deny_cidrs": ["10.0.0.1/8"]},
            "host bits are set",
        ),
        (
            {"name": "a", "type": "outbound-denied", "deny_cidrs": ["10.0.0.0/33"]},
            "prefix length must be 0 to 32",
        ),
        ({"name": "a", "type": "outbound-denied", "deny_cidrs": ["example.com"]}, "'example.com'"),
        (
            {"name": "a", "type": "listen-port-not-allowed", "allow_ports": ["sctp/9"]},
            "protocol must be tcp or udp",
        ),
        (
            {"name": "a", "type": "listen-port-not-allowed", "allow_ports": [70000]},
            "70000 is not a port",
        ),
        ({"name": "a", "type": "connections-out-of-range", "window": 60}, "needs min, max or both"),
        (
            {"name": "a", "type": "connections-out-of-range", "window": 60, "min": 5, "max": 1},
            "min is above max",
        ),
        (
            {"name": "a", "type": "process-denied", "deny": ["/x"], "severity": "urgent"},
            "severity: expected one of low, medium, high",
        ),
    ],
)
def test_a_bad_rule_is_one_line_naming_the_rule_and_field(
    rule: dict[str, Any], message: str
) -> None:
    with pytest.raises(config.ConfigError) as err:
        load(rule)
    text = str(err.value)
    assert text.startswith("agent.toml: detectors.custom.rules: rule 1") and message in text
    assert "\n" not in text


def test_rule_names_are_unique_and_check_lists_them() -> None:
    rule = {"name": "a", "type": "process-denied", "deny": ["/x"]}
    with pytest.raises(config.ConfigError, match="rule 2 'a': the name is used by an earlier rule"):
        load(rule, rule)
    lines = custom.describe({"rules": load(rule)})
    assert lines == ["rule 'a': process-denied, medium; suppress 600.0, deny 1"]


def test_rules_from_a_toml_file(tmp_path: Any) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        "[[detectors.custom.rules]]\n"
        'name = "no-telnet"\ntype = "process-denied"\ndeny = ["*/telnetd"]\nseverity = "high"\n'
        "[[detectors.custom.rules]]\n"
        'name = "ssh-from-lan"\ntype = "inbound-not-allowed"\nallow_cidrs = ["192.0.2.0/24"]\n'
        "ports = [22]\n"
    )
    cfg = config.load(str(path))
    assert [r["name"] for r in cfg.section("detectors.custom")["rules"]] == [
        "no-telnet",
        "ssh-from-lan",
    ]
