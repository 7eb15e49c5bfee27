"""Command lines of `process-exec` events, read the way the detectors need them.

Everything here is attacker-chosen text: the arguments are cut at MAX_CMDLINE characters
and MAX_ARGS words, and only split, compared and joined (linear time). A path built from
an argument is only ever compared with other strings, never opened.

The event's `cmdline` is the arguments joined by single spaces (docs/events.md): an
argument that itself holds a space comes back as two words. The program is known two
ways: `executable` (/proc/PID/exe, which a process cannot fake) and argv[0] (which it
can, with `exec -a`); a detector looks at both. Busybox runs an applet named by argv[0]
(`sh` linked to /bin/busybox) or by argv[1] (`busybox wget ...`).

Not a plugin: the detectors of reverse shells and download-then-run use it.
"""

from __future__ import annotations

import posixpath

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

MAX_CMDLINE = 4096  # characters looked at (the process collector's own cap)
MAX_ARGS = 256  # words looked at
MAX_SHOWN = 512  # characters of a command line or path written into an alert
DELETED = " (deleted)"
BUSYBOX = ("busybox", "busybox.nosuid", "busybox.suid", "toybox")


def text(value: Any, limit: int = MAX_CMDLINE) -> str:
    """A payload field as capped text ("" for null or a non-string)."""
    return value[:limit] if isinstance(value, str) else ""


def shown(value: Any) -> str | None:
    """A field as written into an alert: capped, null kept."""
    if not isinstance(value, str):
        return None
    return value if len(value) <= MAX_SHOWN else value[: MAX_SHOWN - 1] + "…"


def split(cmdline: Any) -> list[str]:
    """The words of a command line, at most MAX_ARGS of its first MAX_CMDLINE characters."""
    return text(cmdline).split(None, MAX_ARGS)[:MAX_ARGS]


def basename(path: str) -> str:
    if path.endswith(DELETED):
        path = path[: -len(DELETED)]
    return path[path.rfind("/") + 1 :]


def program(executable: Any, args: list[str]) -> tuple[set[str], list[str]]:
    """(the names the program goes by, its arguments after those names).

    The names are the executable's basename and argv[0]'s (a login shell's leading `-`
    taken off); for busybox, the applet: argv[0] when it is not busybox itself, else
    argv[1], whose arguments then start at argv[2].
    """
    names = set()
    exe = basename(executable) if isinstance(executable, str) else ""
    if exe:
        names.add(exe)
    rest = args[1:]
    if args:
        argv0 = basename(args[0]).lstrip("-")
        if argv0:
            names.add(argv0)
        if rest and (argv0 in BUSYBOX or (exe in BUSYBOX and argv0 == exe)):
            names.add(basename(rest[0]))
            rest = rest[1:]
    return names, rest


def named(names: Iterable[str], wanted: Iterable[str]) -> str | None:
    """The first of `names` in `wanted`, where an entry ending in `*` matches by prefix
    (`python*` is python3 and python3.11)."""
    for name in names:
        for want in wanted:
            if want.endswith("*"):
                if name.startswith(want[:-1]):
                    return name
            elif name == want:
                return name
    return None


def resolve(path: str, cwd: Any) -> str | None:
    """An argument as an absolute, normalised path (against the process's working
    directory); None when it is relative and the directory is unknown."""
    if not path or "\0" in path:
        return None
    if not path.startswith("/"):
        if not isinstance(cwd, str) or not cwd.startswith("/"):
            return None
        path = f"{cwd}/{path}"
    normal = posixpath.normpath(path)
    return "/" + normal.lstrip("/")  # normpath keeps a leading "//"


def inside(path: str, directories: Iterable[str]) -> str | None:
    """The first of `directories` that holds `path` (at any depth)."""
    for directory in directories:
        top = directory.rstrip("/")
        if path.startswith(top + "/") and len(path) > len(top) + 1:
            return directory
    return None


def process(payload: dict[str, Any], cmdline: str, cwd: bool = False) -> dict[str, Any]:
    """A `process-exec` event's process and its parent as written into an alert (with
    its working directory when `cwd`): the same fields, in the same order, for every
    detector that alerts on one."""
    out = {
        "pid": payload.get("pid"),
        "ppid": payload.get("ppid"),
        "user": payload.get("user"),
        "uid": payload.get("uid"),
        "executable": shown(payload.get("executable")),
        "cmdline": shown(cmdline) if cmdline else None,
    }
    if cwd:
        out["cwd"] = shown(payload.get("cwd"))
    out["parent_executable"] = shown(payload.get("parent_executable"))
    out["parent_cmdline"] = shown(payload.get("parent_cmdline"))
    return out
