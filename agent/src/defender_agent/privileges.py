"""Give up root before anything else happens: `defender-agent run --user NAME`.

systemd starts the agent as its own user (User= in the unit); init scripts and plain
shells start it as root and pass --user, and the agent switches at once, before it opens
a file: supplementary groups from the group database (`adm` reads the auth logs, `utmp`
reads btmp), then the group, then the user. Nothing the agent does needs root (see
docs/security.md for what each collector needs).
"""

from __future__ import annotations

import os


class PrivilegeError(Exception):
    """The switch to the agent's user could not be made; the agent must not run."""


def drop_to(user: str) -> tuple[int, int]:
    """Become `user` (its uid, primary gid and supplementary groups); return (uid, gid).

    Already running as that user: nothing to do. As another non-root user: an error.
    """
    import pwd  # a C module: cheap, and only when --user is given

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"--user {user}: no such user") from None
    uid, gid = entry.pw_uid, entry.pw_gid
    if os.geteuid() == uid and os.getuid() == uid:
        return uid, gid
    if os.geteuid() != 0:
        raise PrivilegeError(
            f"--user {user}: only root can switch users (running as {os.geteuid()})"
        )
    try:
        os.initgroups(user, gid)
        os.setgid(gid)
        os.setuid(uid)
    except OSError as exc:
        raise PrivilegeError(f"--user {user}: cannot switch: {exc.strerror}") from None
    if uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            pass  # as it must be: root is gone for good
        else:
            raise PrivilegeError(f"--user {user}: root could be regained; refusing to run")
    return uid, gid
