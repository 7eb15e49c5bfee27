"""Where the agent's files live on a device: the one copy every package format uses.

These paths are the project-wide contract (see docs/installer.md); maintainer
scripts and the nfpm configuration are rendered from them, never hard-coded twice.
"""

from __future__ import annotations

PACKAGE_NAME = "defender-agent"
SERVICE_NAME = "defender-agent"
LIB_DIR = "/usr/lib/defender-agent"
PYTHON_PACKAGE_DIR = f"{LIB_DIR}/defender_agent"
BUILD_INFO_PATH = f"{LIB_DIR}/BUILD-INFO.json"
COMMAND_PATH = "/usr/bin/defender-agent"
MANUAL_PATH = "/usr/share/man/man1/defender-agent.1.gz"  # packaging/defender-agent.1, gzip -9n
SYSTEMD_UNIT_PATH = "/lib/systemd/system/defender-agent.service"
# Drop-ins granting what a collector needs beyond the base unit (packaging/systemd/NAME.conf)
SYSTEMD_DROPIN_DIR = "/lib/systemd/system/defender-agent.service.d"
INIT_SCRIPT_PATH = "/etc/init.d/defender-agent"
CONFIG_DIR = "/etc/defender-agent"
CONFIG_PATH = f"{CONFIG_DIR}/agent.toml"
THREAT_LIST_PATH = f"{CONFIG_DIR}/threat-intel.txt"  # [detectors.threat_intel] path
STATE_DIR = "/var/lib/defender-agent"
# The agent runs as its own system user, in the groups that may read what it follows:
# `adm` (auth logs on Debian-like systems), `utmp` (btmp) and `systemd-journal` (the
# journal, on systems without an auth log), where they exist.
AGENT_USER = "defender-agent"
AGENT_GROUPS = ("adm", "utmp", "systemd-journal")

# Debian's documentation directory: the licence (copyright) and the changelog.
DOC_DIR = f"/usr/share/doc/{PACKAGE_NAME}"
# The lintian tags the package carries on purpose, each with its reason (deb only).
LINTIAN_OVERRIDES_PATH = f"/usr/share/lintian/overrides/{PACKAGE_NAME}"

LICENSE = "MIT"
# A GitHub no-reply address: it looks like the project's, but receives no mail (the
# project has published no list yet; docs/security.md says where to report instead).
MAINTAINER = "Defender maintainers <defender@users.noreply.github.com>"
# Synopsis, then the extended description: Debian wants lines of at most 80 columns.
DESCRIPTION = (
    "Open on-device security agent for embedded Linux\n"
    "Collects login and system events, detects brute-force attacks and other\n"
    "threats, and writes alerts as JSON lines. Replaces the Microsoft Defender\n"
    "for IoT micro agent."
)
