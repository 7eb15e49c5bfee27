"""The image profiles: which packages, which init system, which SSH server."""

from __future__ import annotations

from dataclasses import dataclass

from defender_tools.errors import UserError

DEFAULT_SUITE = "bookworm"
OPERATOR_USER = "operator"
OPERATOR_PASSWORD = "defender-operator"  # test image only; the qemu tests log in with it

# Explicit packages on top of --variant=essential (see docs/qemu.md for why each is there).
# The `standard` profile: systemd, OpenSSH, and the journal alone (no syslog daemon, as
# Debian installs and many Yocto images run): the login collector follows the journal.
INCLUDE = (
    "python3",
    "openssh-server",
    "systemd-sysv",
    "udev",  # systemd-networkd waits for udev to initialise links
    "dbus",  # systemd-logind needs it, and logind turns QMP system_powerdown into a poweroff
    "passwd",
    "mount",
    "kmod",
    "iproute2",
    "procps",
)
# The `embedded` profile: what small devices run. sysvinit instead of systemd, Dropbear
# instead of OpenSSH, ifupdown + busybox udhcpc for DHCP, acpid for the power button.
EMBEDDED_INCLUDE = (
    "python3",
    "dropbear-bin",
    "dropbear-run",  # bookworm: pulls `dropbear`, which has /etc/init.d/dropbear
    "rsyslog",  # writes /var/log/auth.log (auth + authpriv), also under sysvinit
    "sysvinit-core",
    "initscripts",
    "orphan-sysvinit-scripts",  # bookworm's rsyslog ships no init script; this has it
    "sysv-rc",
    "ifupdown",
    "udhcpc",
    "acpid",  # turns QMP system_powerdown (ACPI power button) into /sbin/poweroff
    "openssh-client",  # the in-guest attackers' client (scenarios.lab), not the agent's
    "passwd",
    "mount",
    "kmod",
    "iproute2",
    "procps",
)
KERNEL_CMDLINE = "net.ifnames=0 quiet loglevel=4 systemd.show_status=auto"
EMBEDDED_KERNEL_CMDLINE = "net.ifnames=0 quiet loglevel=4"
COMMON_OVERLAY = "common"


@dataclass(frozen=True)
class Profile:
    """One flavour of the test image: its packages, init system and SSH server."""

    name: str
    include: tuple[str, ...]
    init: str  # "systemd" or "sysvinit": how the image is configured and services are queried
    ssh_service: str  # the `service` the agent reports for SSH logins in this image
    kernel_cmdline: str
    # OpenSSH logs "Invalid user NAME from IP"; Dropbear 2022.83 logs only "Login attempt for
    # nonexistent user" and an exit line without the name, so no source names such a user.
    logs_unknown_user_names: bool = True
    # where the SSH server's messages land: "journal" (no syslog daemon) or "auth.log"
    auth_messages: str = "journal"

    @property
    def auth_log_command(self) -> str:
        """A guest shell command printing the SSH server's log lines (kept by the tests)."""
        if self.auth_messages == "journal":
            return (
                "journalctl --no-pager -o short-iso-precise "
                "SYSLOG_IDENTIFIER=sshd SYSLOG_IDENTIFIER=sshd-session"
            )
        return "cat /var/log/auth.log"

    @property
    def overlays(self) -> tuple[str, ...]:
        """The overlay trees copied into the root, in order: common, then the profile's own."""
        return (COMMON_OVERLAY, self.name)


PROFILES: dict[str, Profile] = {
    "standard": Profile("standard", INCLUDE, "systemd", "sshd", KERNEL_CMDLINE),
    "embedded": Profile(
        "embedded",
        EMBEDDED_INCLUDE,
        "sysvinit",
        "dropbear",
        EMBEDDED_KERNEL_CMDLINE,
        logs_unknown_user_names=False,
        auth_messages="auth.log",
    ),
}
DEFAULT_PROFILE = "standard"


def get_profile(name: str) -> Profile:
    """The named profile; an unknown name is a user mistake."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(PROFILES)
        raise UserError(f"--profile {name!r}: unknown profile (choose one of: {known})") from None


def image_dir_name(profile: str) -> str:
    """Default image directory (= image NAME) per profile; `standard` keeps the old name."""
    get_profile(profile)
    return "defender-debian" if profile == DEFAULT_PROFILE else f"defender-debian-{profile}"
