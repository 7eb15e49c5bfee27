"""Download-then-run detector: a file fetched into /tmp, /dev/shm or /var/tmp and then
made executable or run, the way droppers install themselves.

Only `process-exec` events, in the order they happen:

- A fetch: a program of `fetchers` (`NAME=STYLE`: curl, wget or tftp style arguments;
  busybox's applets count by their names) that writes a file, whose path (`-o`, `-O`,
  `--output`, wget's `-O` and `-P`, tftp's `-l`/`-r`, or the URL's last segment in the
  working directory) lies in one of `watched_dirs`. A fetch to stdout (`curl URL`,
  `wget -O-`) writes no file and is not one.
- Then, within `window` seconds of event time (either way round: a shell's `exec` is
  dated at its fork), a run: `chmod` adding an execute bit to the file; the file exec'd
  (the event's executable); or an interpreter of `interpreters` given it as an argument
  (`sh /tmp/bins.sh`; a script run by its `#!` line comes as `/bin/sh ./bins.sh` too).

Correlation is by the file's path (absolute, normalised against the process's working
directory) when the fetch names it for sure. When it does not (wget's default name
becomes `x.1` if `x` exists; curl `-J` and tftp-hpa take the server's or the remote
name), a run of any file directly in the fetch's directory by the same uid counts too:
that is looser (a compile in /tmp running ./a.out within the window after such a fetch
by the same user would count), which is why only uncertain names use it. Events carry
no session, so two users' work in /tmp is told apart by uid only.

A fetch piped into a shell (`curl URL | sh`, `wget -qO- URL | busybox sh`) belongs here
too, when `pipe_to_shell` is on: it is a download run without a file. It is visible only
when the pipeline is an argument (`sh -c "..."`, a cron line, an exploit's payload): a
shell whose own command line, or whose parent's, pipes a fetcher into a shell. Typed at
an interactive prompt, the pipeline is in no event.

Package managers install and run files in /tmp: a process started by one of
`package_managers`, by a maintainer script (`package_scripts`, looked for in the command
line and the parent's), or by any process the detector saw descend from one (a bounded
table of pids, so the parent chain is not limited to one level) is neither a fetch nor a
run.

One incident per fetched file (or per directory and uid, or per piped command line):
running it again is counted into it.
"""

from __future__ import annotations

from collections import OrderedDict

from defender_agent.detectors import commands
from defender_agent.detectors.incidents import Incidents
from defender_agent.model import rfc3339
from defender_agent.plugins import Quiet

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any

    from defender_agent.model import Record
    from defender_agent.plugins import Context

NAME = "download_then_run"
ALERT = "DownloadThenRun"
SEVERITY = "medium"
STYLES = ("curl", "wget", "tftp")
MAX_MANAGED = 4096  # pids remembered as descendants of a package manager
MANAGED_HORIZON = 3600.0  # seconds (event time) a package manager's pid stays trusted
MAX_SEGMENTS = 64  # pipeline segments of one command line looked at
MAX_INTERPRETER_ARGS = 16  # arguments of an interpreter looked at for the fetched file
REMEDIATION = (
    "Keep a copy of the file for analysis (its path and the URL are in the alert), then "
    "delete it, kill what it started, block the host it came from, and find what ran "
    "the fetch (the parent command line: a web interface, a cron job, a login). A "
    "dropper usually means someone already runs commands on the device."
)


# Options that take a value, so that the value is not read as a URL or a cluster of flags.
CURL_SHORT_VALUE = frozenset("AbcCdDeEFHKmoPQrtTuUwxXyYz")
CURL_LONG_VALUE = frozenset(
    (
        "--cacert",
        "--capath",
        "--cert",
        "--ciphers",
        "--config",
        "--connect-timeout",
        "--connect-to",
        "--continue-at",
        "--cookie",
        "--cookie-jar",
        "--create-file-mode",
        "--data",
        "--data-ascii",
        "--data-binary",
        "--data-raw",
        "--data-urlencode",
        "--dns-servers",
        "--dump-header",
        "--form",
        "--form-string",
        "--header",
        "--interface",
        "--key",
        "--limit-rate",
        "--max-filesize",
        "--max-redirs",
        "--max-time",
        "--noproxy",
        "--pass",
        "--proto",
        "--proto-default",
        "--proto-redir",
        "--proxy",
        "--proxy-user",
        "--range",
        "--referer",
        "--request",
        "--resolve",
        "--retry",
        "--retry-delay",
        "--retry-max-time",
        "--speed-limit",
        "--speed-time",
        "--stderr",
        "--tls-max",
        "--trace",
        "--trace-ascii",
        "--upload-file",
        "--user",
        "--user-agent",
        "--write-out",
        "--oauth2-bearer",
    )
)
WGET_SHORT_VALUE = frozenset("aABDeiIlOoPQRtTUwXY")
WGET_LONG_VALUE = frozenset(
    (
        "--output-document",
        "--directory-prefix",
        "--output-file",
        "--append-output",
        "--input-file",
        "--tries",
        "--timeout",
        "--wait",
        "--user-agent",
        "--header",
        "--user",
        "--password",
        "--post-data",
        "--post-file",
        "--bind-address",
        "--limit-rate",
        "--quota",
        "--referer",
        "--execute",
        "--load-cookies",
        "--save-cookies",
        "--ca-certificate",
        "--certificate",
        "--private-key",
    )
)
# options after which an interpreter runs a command given inline or stdin, not a script:
# sh -c/-s; perl -e/-E, python -c/-m, ruby/lua/node -e, php -r (a shell's -e is errexit)
SHELL_INLINE = frozenset("cs")
INLINE = frozenset("cemrE")
SHELLS = frozenset(("sh", "ash", "bash", "dash", "hush", "ksh", "mksh", "zsh"))
WRAPPERS = frozenset(("sudo", "doas", "env", "nohup", "exec", "command", "nice", "timeout"))


class _Fetch:
    __slots__ = (
        "certain",
        "cmdline",
        "directory",
        "executable",
        "path",
        "pid",
        "tool",
        "uid",
        "url",
    )

    def __init__(
        self, tool: str, path: str, certain: bool, url: str | None, payload: dict[str, Any]
    ) -> None:
        self.tool = tool
        self.path = path
        self.directory = path[: path.rfind("/")] or "/"
        self.certain = certain
        self.url = url
        self.uid = payload.get("uid")
        self.pid = payload.get("pid")
        self.executable = commands.shown(payload.get("executable"))
        self.cmdline = commands.shown(payload.get("cmdline"))


def _value(args: list[str], i: int, attached: str) -> tuple[str | None, int]:
    """An option's value: attached to it (`-oFILE`, `--output=FILE`) or the next word."""
    if attached:
        return attached, i
    if i + 1 < len(args):
        return args[i + 1], i + 1
    return None, i


def _url_name(url: str | None) -> str | None:
    """The last segment of a URL's path (query and fragment taken off), None when empty."""
    if not url:
        return None
    rest = url.split("://", 1)[-1]
    for mark in ("?", "#"):
        rest = rest.split(mark, 1)[0]
    if "/" not in rest:
        return None
    name = rest[rest.rfind("/") + 1 :]
    return name if name not in ("", ".", "..") else None


def _curl(args: list[str]) -> tuple[str | None, str | None, bool, str | None] | None:
    """(output file, output directory, name certain, URL) of a curl command; None when it
    writes to stdout."""
    out: str | None = None
    outdir: str | None = None
    url: str | None = None
    remote = header = False
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and len(arg) > 2:
            name, eq, val = arg.partition("=")
            if name == "--output":
                out, i = _value(args, i, val if eq else "")
            elif name == "--output-dir":
                outdir, i = _value(args, i, val if eq else "")
            elif name == "--url":
                url, i = _value(args, i, val if eq else "")
            elif name in ("--remote-name", "--remote-name-all"):
                remote = True
            elif name == "--remote-header-name":
                header = True
            elif name in CURL_LONG_VALUE and not eq:
                i += 1
        elif arg.startswith("-") and len(arg) > 1:
            for j, ch in enumerate(arg[1:], 2):
                if ch == "O":
                    remote = True
                elif ch == "J":
                    header = True
                elif ch in CURL_SHORT_VALUE:
                    value, i = _value(args, i, arg[j:])
                    if ch == "o" and out is None:
                        out = value
                    break
        else:
            positional.append(arg)
        i += 1
    if url is None:
        url = next((a for a in positional if "://" in a), positional[0] if positional else None)
    if out is not None and out != "-":
        return out, outdir, True, url
    if remote:
        return _url_name(url), outdir, not header, url
    return None


def _wget(args: list[str]) -> tuple[str | None, str | None, bool, str | None] | None:
    out: str | None = None
    outdir: str | None = None
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and len(arg) > 2:
            name, eq, val = arg.partition("=")
            if name == "--output-document":
                out, i = _value(args, i, val if eq else "")
            elif name == "--directory-prefix":
                outdir, i = _value(args, i, val if eq else "")
            elif name in WGET_LONG_VALUE and not eq:
                i += 1
        elif arg.startswith("-") and len(arg) > 1:
            for j, ch in enumerate(arg[1:], 2):
                if ch in WGET_SHORT_VALUE:
                    value, i = _value(args, i, arg[j:])
                    if ch == "O":
                        out = value
                    elif ch == "P":
                        outdir = value
                    break
        else:
            positional.append(arg)
        i += 1
    url = next((a for a in positional if "://" in a), positional[0] if positional else None)
    if out == "-" or url is None:
        return None
    if out is not None:
        return out, None, True, url  # -O is relative to the working directory, not -P
    # the default: the URL's last segment (index.html without one), renamed x.1 if x exists
    return _url_name(url) or "index.html", outdir, False, url


def _tftp(args: list[str]) -> tuple[str | None, str | None, bool, str | None] | None:
    """busybox/atftp style `tftp -g -r REMOTE [-l LOCAL] HOST`, or tftp-hpa's
    `tftp HOST -c get REMOTE [LOCAL]`."""
    get = False
    remote: str | None = None
    local: str | None = None
    host: str | None = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-c" and i + 2 < len(args) and args[i + 1] == "get":
            remote = args[i + 2]
            local = args[i + 3] if i + 3 < len(args) else None
            name = local or commands.basename(remote)
            return (name or None), None, False, f"tftp://{host or '?'}/{remote}"
        if arg in ("--get",):
            get = True
        elif arg.startswith("--"):
            name, eq, val = arg.partition("=")
            if name in ("--remote-file", "--local-file"):
                value, i = _value(args, i, val if eq else "")
                if name == "--remote-file":
                    remote = value
                else:
                    local = value
        elif arg.startswith("-") and len(arg) > 1:
            for j, ch in enumerate(arg[1:], 2):
                if ch == "g":
                    get = True
                elif ch in "rlb":
                    value, i = _value(args, i, arg[j:])
                    if ch == "r":
                        remote = value
                    elif ch == "l":
                        local = value
                    break
        elif host is None:
            host = arg
        i += 1
    if not get or not remote:
        return None
    return local or commands.basename(remote) or None, None, True, f"tftp://{host or '?'}/{remote}"


def _script(interpreter: str, args: list[str]) -> str | None:
    """The script an interpreter runs: its first argument that is not an option; None when
    it runs a command given inline (`sh -c`, `perl -e`, `python -m`) or reads stdin."""
    inline = SHELL_INLINE if interpreter in SHELLS else INLINE
    for arg in args[:MAX_INTERPRETER_ARGS]:
        if arg == "-" or arg == "--":
            return None
        if arg.startswith("-"):
            if arg.startswith("--") or not any(c in inline for c in arg[1:]):
                continue
            return None
        return arg
    return None


PARSERS = {"curl": _curl, "wget": _wget, "tftp": _tftp}


def parse_fetchers(entries: list[str]) -> dict[str, str]:
    """`NAME=STYLE` entries; ValueError names the first bad one."""
    out = {}
    for entry in entries:
        name, eq, style = entry.partition("=")
        if not eq or not name or style not in STYLES:
            raise ValueError(f"{entry!r}: write NAME=STYLE with STYLE one of {', '.join(STYLES)}")
        out[name] = style
    return out


def adds_execute(mode: str) -> bool:
    """Whether a chmod mode gives someone the right to execute: octal with an x bit
    (755, 0777, 4711) or a symbolic clause that adds or sets x (+x, u+x, a=rwx)."""
    if mode.isdigit():
        return all(c in "01234567" for c in mode) and any(int(c) & 1 for c in mode[-3:])
    for clause in mode.split(",")[:16]:
        for op in ("+", "="):
            at = clause.find(op)
            if at >= 0 and ("x" in clause[at:] or "X" in clause[at:]):
                return True
    return False


def piped_fetch(cmdline: str, fetchers: dict[str, str], shells: tuple[str, ...]) -> str | None:
    """The fetcher of a `FETCHER ... | SHELL` pipeline in a command line, if there is one."""
    if "|" not in cmdline:
        return None
    segments = cmdline.split("|", MAX_SEGMENTS)
    for left, right in zip(segments, segments[1:]):
        words = [commands.basename(w.strip("'\"(;&{")) for w in left.split()[:64]]
        fetcher = commands.named(words, fetchers)
        if fetcher is None:
            continue
        target = None
        for word in right.split()[:8]:
            name = commands.basename(word.strip("'\"(;&{"))
            if name in WRAPPERS or name in commands.BUSYBOX or word.startswith("-") or "=" in word:
                continue
            target = name
            break
        if target is not None and commands.named([target], shells) is not None:
            return fetcher
    return None


class DownloadThenRunDetector(Quiet):
    name = NAME

    def __init__(
        self,
        ctx: Context,
        fetchers: list[str] | tuple[str, ...],
        watched_dirs: list[str] | tuple[str, ...],
        interpreters: list[str] | tuple[str, ...],
        package_managers: list[str] | tuple[str, ...],
        package_scripts: list[str] | tuple[str, ...],
        window: float = 300.0,
        pipe_to_shell: bool = True,
        max_fetches: int = 256,
        quiet: float = 3600.0,
        update_every: float = 300.0,
        max_incidents: int = 256,
    ) -> None:
        self.ctx = ctx
        self.fetchers = parse_fetchers(list(fetchers))
        self.watched = tuple(d.rstrip("/") or "/" for d in watched_dirs)
        self.interpreters = tuple(interpreters)
        self.package_managers = tuple(package_managers)
        self.package_scripts = tuple(package_scripts)
        self.window = window
        self.pipe_to_shell = pipe_to_shell
        self.max_fetches = max_fetches
        self.incidents = Incidents(quiet, update_every, max_incidents)
        self._paths: OrderedDict[str, tuple[_Fetch, float]] = OrderedDict()
        self._dirs: OrderedDict[tuple[str, Any], tuple[_Fetch, float]] = OrderedDict()
        self._managed: OrderedDict[int, float] = OrderedDict()
        self.counts = {
            "execs": 0,
            "fetches": 0,
            "fetches-watched": 0,
            "fetch-unresolved": 0,
            "package-manager": 0,
            "fetches-forgotten": 0,
            "managed-forgotten": 0,
        }

    def statistics(self) -> dict[str, int]:
        return {
            **self.counts,
            **self.incidents.counts,
            "tracked-fetches": len(self._paths) + len(self._dirs),
            "incidents-open": len(self.incidents),
        }

    # --- events -------------------------------------------------------------------
    def process(self, record: Record) -> list[Record]:
        payload = record.payload
        if payload.get("event") != "process-exec":
            return []
        self.counts["execs"] += 1
        when = record.time if record.time is not None else self.ctx.clock.time()
        cmdline = commands.text(payload.get("cmdline"))
        args = commands.split(cmdline)
        names, rest = commands.program(payload.get("executable"), args)
        if self._managed_by_package(payload, names, cmdline, when):
            self.counts["package-manager"] += 1
            return []
        fetcher = commands.named(names, self.fetchers)
        if fetcher is not None:
            self._fetch(fetcher, rest, payload, when)
            return []
        return self._run(payload, names, rest, cmdline, when)

    def _managed_by_package(
        self, payload: dict[str, Any], names: set[str], cmdline: str, when: float
    ) -> bool:
        pid, ppid = payload.get("pid"), payload.get("ppid")
        parent_exe = payload.get("parent_executable")
        parent = commands.basename(parent_exe) if isinstance(parent_exe, str) else ""
        parent_cmdline = commands.text(payload.get("parent_cmdline"))
        managed = (
            commands.named(names, self.package_managers) is not None
            or (parent and commands.named([parent], self.package_managers) is not None)
            or any(s in cmdline or s in parent_cmdline for s in self.package_scripts)
        )
        if not managed and isinstance(ppid, int):
            seen = self._managed.get(ppid)
            if seen is not None and abs(when - seen) <= MANAGED_HORIZON:
                managed = True
                self._managed[ppid] = max(seen, when)  # a long upgrade stays known
        if managed and isinstance(pid, int):
            self._managed[pid] = when
            self._managed.move_to_end(pid)
            while len(self._managed) > MAX_MANAGED:
                self._managed.popitem(last=False)
                self.counts["managed-forgotten"] += 1
        return bool(managed)

    def _fetch(self, tool: str, args: list[str], payload: dict[str, Any], when: float) -> None:
        self.counts["fetches"] += 1
        parsed = PARSERS[self.fetchers[tool]](args)
        if parsed is None:
            return
        name, outdir, certain, url = parsed
        if not name:
            self.counts["fetch-unresolved"] += 1
            return
        cwd = payload.get("cwd")
        if outdir is not None and not name.startswith("/"):
            base = commands.resolve(outdir, cwd)
            path = commands.resolve(name, base) if base else None
        else:
            path = commands.resolve(name, cwd)
        if path is None:
            self.counts["fetch-unresolved"] += 1
            return
        if commands.inside(path, self.watched) is None:
            return
        self.counts["fetches-watched"] += 1
        fetch = _Fetch(tool, path, certain, commands.shown(url), payload)
        self._remember(self._paths, path, fetch, when)
        if not certain:
            self._remember(self._dirs, (fetch.directory, fetch.uid), fetch, when)

    def _remember(
        self, table: OrderedDict[Any, tuple[_Fetch, float]], key: Any, fetch: _Fetch, when: float
    ) -> None:
        table[key] = (fetch, when)
        table.move_to_end(key)
        while table:
            _old, (_f, then) = next(iter(table.items()))
            if len(table) > self.max_fetches:
                self.counts["fetches-forgotten"] += 1
            elif then >= when - self.window:
                break
            table.popitem(last=False)

    def _lookup(self, path: str | None, uid: Any, when: float) -> tuple[_Fetch, float, str] | None:
        """The fetch that wrote `path`, within the window: by path, else (uncertain names)
        by its directory and uid."""
        if path is None:
            return None
        entry = self._paths.get(path)
        if entry is not None and abs(when - entry[1]) <= self.window:
            return entry[0], entry[1], "path"
        entry = self._dirs.get((path[: path.rfind("/")] or "/", uid))
        if entry is not None and abs(when - entry[1]) <= self.window:
            return entry[0], entry[1], "directory and uid"
        return None

    def _run(
        self, payload: dict[str, Any], names: set[str], rest: list[str], cmdline: str, when: float
    ) -> list[Record]:
        out: list[Record] = []
        uid, cwd = payload.get("uid"), payload.get("cwd")
        candidates: list[tuple[str, str | None]] = []  # (how, path)
        if "chmod" in names:
            words = [a for a in rest if not a.startswith("-")]
            if words and adds_execute(words[0]):
                candidates += [("chmod", commands.resolve(w, cwd)) for w in words[1:]]
        exe = payload.get("executable")
        if isinstance(exe, str) and exe.startswith("/"):
            candidates.append(("exec", exe))
        interpreter = commands.named(names, self.interpreters)
        script = _script(interpreter, rest) if interpreter is not None else None
        if script is not None:
            candidates.append(("interpreter", commands.resolve(script, cwd)))
        seen = set()
        for how, path in candidates:
            found = self._lookup(path, uid, when)
            if found is None or found[0].path in seen or path is None:
                continue
            seen.add(found[0].path)
            out += self._alert(payload, how, path, cmdline, when, *found)
        if interpreter is not None and self.pipe_to_shell:
            out += self._piped(payload, cmdline, when)
        return out

    def _alert(
        self,
        payload: dict[str, Any],
        how: str,
        path: str,
        cmdline: str,
        when: float,
        fetch: _Fetch,
        fetched: float,
        matched: str,
    ) -> list[Record]:
        verb = {"chmod": "made executable", "exec": "run", "interpreter": "run"}[how]
        text = (
            f"{path} was {verb} {when - fetched:.1f} s after {fetch.tool} downloaded "
            f"{'it' if matched == 'path' else 'a file into ' + fetch.directory}"
            f"{' from ' + fetch.url if fetch.url else ''}"
        )
        evidence = commands.process(payload, cmdline, cwd=True)
        evidence.update(
            {
                "how": how,
                "path": commands.shown(path),
                "matched_by": matched,
                "fetched_path": commands.shown(fetch.path),
                "url": fetch.url,
                "fetcher": fetch.tool,
                "fetch_pid": fetch.pid,
                "fetch_executable": fetch.executable,
                "fetch_cmdline": fetch.cmdline,
                "fetched_at": rfc3339(fetched),
                "seconds_after": round(when - fetched, 3),
            }
        )
        key = fetch.path if matched == "path" else f"{fetch.directory} uid {fetch.uid}"
        return self.incidents.found(ALERT, key, when, SEVERITY, text, REMEDIATION, evidence)

    def _piped(self, payload: dict[str, Any], cmdline: str, when: float) -> list[Record]:
        """A shell fed by a fetcher through a pipe, in its own command line or its parent's."""
        shells = self.interpreters
        for line in (cmdline, commands.text(payload.get("parent_cmdline"))):
            fetcher = piped_fetch(line, self.fetchers, shells)
            if fetcher is None:
                continue
            evidence = commands.process(payload, cmdline, cwd=True)
            evidence.update({"how": "pipe", "fetcher": fetcher, "pipeline": commands.shown(line)})
            text = f"a download by {fetcher} was piped into a shell: {commands.shown(line)}"
            key = f"pipe {line}"
            return self.incidents.found(ALERT, key, when, SEVERITY, text, REMEDIATION, evidence)
        return []


def _fetchers(section: dict[str, Any]) -> dict[str, str]:
    try:
        return parse_fetchers(list(section["fetchers"]))
    except ValueError as exc:
        from defender_agent.config import ConfigError

        raise ConfigError(f"detectors.{NAME}.fetchers: {exc}") from None


def create(ctx: Context, section: dict[str, Any], state: dict[str, Any]) -> DownloadThenRunDetector:
    _fetchers(section)
    return DownloadThenRunDetector(
        ctx,
        fetchers=list(section["fetchers"]),
        watched_dirs=list(section["watched_dirs"]),
        interpreters=list(section["interpreters"]),
        package_managers=list(section["package_managers"]),
        package_scripts=list(section["package_scripts"]),
        window=float(section["window"]),
        pipe_to_shell=bool(section["pipe_to_shell"]),
        max_fetches=int(section["max_fetches"]),
        quiet=float(section["quiet"]),
        update_every=float(section["update_every"]),
        max_incidents=int(section["max_incidents"]),
    )


def describe(section: dict[str, Any]) -> list[str]:
    fetchers = _fetchers(section)
    return [
        f"DownloadThenRun: a file fetched by {', '.join(sorted(fetchers))} into "
        f"{', '.join(section['watched_dirs'])}, then made executable or run within "
        f"{section['window']:g} s (event time)",
        "DownloadThenRun: a fetch piped into a shell "
        + ("(on)" if section["pipe_to_shell"] else "(off)"),
        f"not under package managers: {len(section['package_managers'])} programs, "
        f"{len(section['package_scripts'])} script paths",
    ]
