"""Login collector: failed logins, logins and logouts from auth logs, wtmp and btmp.

One attempt must be one event even though OpenSSH reports it twice (a "Failed password"
line and a btmp record): auth-log events go out at once and are remembered for
`dedup_hold` seconds; a btmp/wtmp record that matches one is dropped, and one that does
not waits up to `dedup_hold` for its auth-log line before it is emitted alone. OpenSSH
also writes a btmp record at "Invalid user" (before any password is tried, and 2 s or
more before the "Failed password" line that PAM's delay holds back): that line absorbs
its record without being an event itself. Matching
is by (user, source), pairing one to one: the pids differ between sshd's monitor
(which logs) and its session child (which writes wtmp), so pids cannot be the key.
"""

from __future__ import annotations

import os
from collections import OrderedDict, deque

from defender_agent import log as _log
from defender_agent.collectors.common import authlog, journal, timestamps
from defender_agent.collectors.common.follow import FileFollower, Watcher
from defender_agent.linux import utmp
from defender_agent.model import Record, login_event

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any, Optional

    from defender_agent.loop import Timer
    from defender_agent.plugins import Context

    Key = tuple[Optional[str], Optional[str]]

log = _log.get(__name__)

NAME = "login"
DROPBEAR_HOLD = 5.0  # wait this long for the address of an address-less Dropbear line
MAX_TRACKED = 1024  # bound of every correlation table
MAX_TWINS = 64  # attempts of one (user, source) remembered within one hold


CATCHUP_MAX = 60.0  # longest a btmp record waits for a journal still reading its backlog
SSH_GRACE = 130.0  # OpenSSH's LoginGraceTime (120 s) and a margin: a connection is over


class _SshConnection:
    """What one OpenSSH connection (one sshd pid) has shown before it authenticated."""

    __slots__ = ("counted", "deadline", "fact", "keys_rejected", "pam_unmatched")

    def __init__(self, fact: authlog.AuthFact, deadline: float) -> None:
        self.fact = fact  # the newest line: who, from where, when
        self.counted = 0  # failures already emitted for this connection
        self.keys_rejected = 0  # "Failed publickey": not a failure unless nothing follows
        self.pam_unmatched = 0  # PAM errors counted whose "Failed ..." twin is still due
        self.deadline = deadline


class _Pending:
    __slots__ = ("deadline", "key", "kind", "record")

    def __init__(self, deadline: float, kind: str, key: Key, record: Record) -> None:
        self.deadline = deadline
        self.kind = kind
        self.key = key
        self.record = record


class LoginCollector:
    name = NAME

    def __init__(self, ctx: Context, section: dict[str, Any], state: dict[str, Any]) -> None:
        self.ctx = ctx
        self.clock = ctx.clock
        self.hold = float(section["dedup_hold"])
        self.aggressive = section.get("mode") == "aggressive"
        layout = section["utmp_layout"]
        self.layout = utmp.layout_for_machine() if layout == "auto" else layout
        size = utmp.LAYOUTS[self.layout].size
        saved = state.get("files", {}) if isinstance(state.get("files"), dict) else {}
        self.source, self.source_reason = auth_source(section)
        self.journal = None
        if self.source == "journal":
            saved_journal = state.get("journal")
            self.journal = journal.JournalFollower(
                ctx,
                self._on_journal_entry,
                cursor=saved_journal.get("cursor") if isinstance(saved_journal, dict) else None,
                command=section["journalctl"],
                directory=section["journal_directory"],
            )
        self.auth_followers = [
            FileFollower(path, on_lines=self._on_lines, monotonic=self.clock.monotonic)
            for path in dict.fromkeys(section["auth_logs"] if self.journal is None else ())
        ]
        self.wtmp = (
            FileFollower(
                section["wtmp"],
                on_records=self._on_wtmp,
                record_size=size,
                monotonic=self.clock.monotonic,
            )
            if section["wtmp"]
            else None
        )
        self.btmp = (
            FileFollower(
                section["btmp"],
                on_records=self._on_btmp,
                record_size=size,
                monotonic=self.clock.monotonic,
            )
            if section["btmp"]
            else None
        )
        self.followers = [*self.auth_followers, *(f for f in (self.wtmp, self.btmp) if f)]
        self._has_utmp = self.wtmp is not None or self.btmp is not None
        for follower in self.followers:
            follower.restore(saved.get(follower.path))
        self.watcher = Watcher(ctx, self.followers, section["backend"], section["poll_interval"])
        self.counts: dict[str, int] = {}
        # dedup: auth-log events remembered, utmp records waiting ("failed"/"login")
        self._seen: dict[str, OrderedDict[Key, deque[float]]] = {
            "failed": OrderedDict(),
            "login": OrderedDict(),
            "logout": OrderedDict(),
        }
        self._pending: deque[_Pending] = deque()
        # Dropbear correlation by pid
        self._db_addr: OrderedDict[int, tuple[str, int | None]] = OrderedDict()
        # pid -> held (deadline, fact, observed) of address-less lines
        self._db_held: OrderedDict[int, list[tuple[float, authlog.AuthFact, float]]] = OrderedDict()
        self._db_counted: OrderedDict[int, int] = OrderedDict()  # pid -> failures counted
        self._tty_user: OrderedDict[str, str] = OrderedDict()
        # sshd pids whose "Invalid user" btmp record was already set aside (btmp-only mode)
        self._invalid_pids: OrderedDict[int, bool] = OrderedDict()
        self._flush_timer: Timer | None = None
        self._fed_auth = False
        self._restore_pending(state.get("pending"))
        # OpenSSH connections by pid, until they authenticate or close
        self._ssh: OrderedDict[int, _SshConnection] = OrderedDict()
        self._flush_at = 0.0

    # --- lifecycle ----------------------------------------------------------------
    def start(self) -> None:
        if self.journal is not None:  # first: btmp records read at start wait for it
            self.journal.start()
        self.watcher.start()
        if self._pending:
            self._schedule(self._pending[0].deadline)
        log.info(
            "login collector: %s; following %s",
            self.watcher.describe(),
            ", ".join(
                [
                    *(f.path for f in self.followers),
                    *([self.journal.describe()] if self.journal else []),
                ]
            ),
        )

    def stop(self) -> None:
        if self.journal is not None:
            self.journal.stop()
        # utmp records still waiting for their auth-log twins are saved, not emitted: the
        # twin may be the first line the next run reads (journald tells its readers
        # 250 ms late), and both would count
        self._flush(force=True, keep_pending=True)
        self.watcher.stop()

    def save_state(self) -> dict[str, Any]:
        files = {}
        for follower in self.followers:
            pos = follower.position()
            if pos is not None:
                files[follower.path] = pos
        state: dict[str, Any] = {"files": files}
        if self.journal is not None and self.journal.cursor:
            state["journal"] = {"cursor": self.journal.cursor}
        if self._pending:
            state["pending"] = [
                [p.kind, p.key[0], p.key[1], p.record.payload, p.record.time, p.record.observed]
                for p in self._pending
            ]
        return state

    def _restore_pending(self, saved: Any) -> None:
        """utmp records the last run held for their twins: they wait again (a fresh hold,
        and while the journal catches up), so the twin read now still pairs with them."""
        if not isinstance(saved, list):
            return
        deadline = self.clock.monotonic() + self.hold
        for item in saved[-MAX_TRACKED:]:
            try:
                kind, user, source, payload, when, observed = item
                if kind not in ("failed", "login") or not isinstance(payload, dict):
                    continue
                record = Record("event", payload, float(when), float(observed))
                key: Key = (
                    None if user is None else str(user),
                    None if source is None else str(source),
                )
            except (TypeError, ValueError):
                continue
            self._pending.append(_Pending(deadline, kind, key, record))

    def statistics(self) -> dict[str, int]:
        out = dict(self.counts)
        if self.journal is not None:
            out.update(self.journal.counts)
        for follower in self.followers:
            for reason, n in follower.counts.items():
                out[reason] = out.get(reason, 0) + n
        return out

    def _count(self, reason: str, n: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n

    def _auth_log_open(self) -> bool:
        return (
            self._fed_auth
            or self.journal is not None
            or any(f.is_open for f in self.auth_followers)
        )

    # --- auth logs ----------------------------------------------------------------
    def _on_lines(self, lines: list[str]) -> None:
        for line in lines:
            try:
                fact = authlog.parse_line(line, self.clock.time())
            except Exception:  # the parser promises never to raise; be safe anyway
                log.exception("auth-log parser failed on %r", line[:200])
                self._count("parser-error")
                continue
            if isinstance(fact, str):
                if fact != authlog.SKIP_OTHER_PROGRAM:
                    self._count(fact)
                continue
            self._on_fact(fact)

    def _on_journal_entry(
        self, program: str, pid: int | None, message: str, when: float | None
    ) -> None:
        try:
            fact = authlog.parse_entry(program, pid, message, when)
        except Exception:  # the parser promises never to raise; be safe anyway
            log.exception("auth-log parser failed on %r", message[:200])
            self._count("parser-error")
            return
        if isinstance(fact, str):
            if fact != authlog.SKIP_OTHER_PROGRAM:
                self._count(fact)
            return
        self._on_fact(fact)

    # --- replay: entries read by `defender-agent replay`, not by the followers -----
    def feed_fact(self, fact: authlog.AuthFact) -> None:
        """One parsed auth-log or journal entry, with the correlation live lines get."""
        self._fed_auth = True  # utmp records now wait for their auth-log twins
        self._on_fact(fact)

    def feed_utmp(self, data: bytes, failed: bool) -> None:
        """Whole utmp records: btmp's (failed=True) or wtmp's."""
        self._has_utmp = True
        (self._on_btmp if failed else self._on_wtmp)(data)

    def _on_fact(self, fact: authlog.AuthFact) -> None:
        kind = fact.kind
        pid = fact.pid
        if fact.service == "sshd" and pid is not None and self._ssh_connection(fact, pid):
            return
        if fact.service == "dropbear" and pid is not None:
            if kind == "child-connection" and fact.source:
                self._remember(self._db_addr, pid, (fact.source, fact.port))
                return
            if kind in ("failed", "nonexistent-user"):
                self._remember(self._db_counted, pid, self._db_counted.get(pid, 0) + fact.repeat)
            if kind == "nonexistent-user":
                addr = self._db_addr.get(pid)
                if addr is None:
                    held = self._db_held.setdefault(pid, [])
                    if len(held) >= MAX_TWINS:  # one process, one connection: a flood
                        self._count("dropbear-unresolved")
                        self._emit_auth(fact._replace(kind="failed"), "failed")
                        return
                    deadline = self.clock.monotonic() + DROPBEAR_HOLD
                    held.append((deadline, fact, self.clock.time()))
                    self._bound(self._db_held)
                    self._schedule(deadline)
                    return
                fact = fact._replace(kind="failed", source=addr[0], port=addr[1])
                kind = "failed"
            elif kind == "exit-before-auth":
                self._dropbear_exit(fact, pid)
                return
            elif kind == "logout":
                self._db_addr.pop(pid, None)
                self._db_counted.pop(pid, None)
        if kind in ("nonexistent-user", "pam-failed"):  # no pid to correlate by
            kind = "failed"
        if kind == "invalid-user" and fact.service == "sshd":
            # OpenSSH writes a btmp record when it meets an unknown user name, before any
            # password is tried; the attempt itself follows as a "Failed ..." line with a
            # btmp record of its own. This line is that first record's twin: absorb it, so
            # each attempt is still counted once.
            self._absorb_twin("failed", (fact.user, fact.source))
            return
        if kind in ("failed", "local-failed"):
            self._emit_repeated(fact)
        elif kind == "accepted":
            self._emit_auth(fact, "login")
        elif kind == "logout":
            self._emit_auth(fact, "logout")
        else:
            self._count(f"noted-{kind}", fact.repeat)  # enumeration and preauth facts

    def _ssh_connection(self, fact: authlog.AuthFact, pid: int) -> bool:
        """Count OpenSSH attempts per connection; True when the fact is fully handled.

        - A rejected public key is no failure by itself: ssh-agent offers every key it
          has, and a user whose right key comes third is not an attacker. A connection
          that never authenticates after rejected keys is one failure when it closes.
        - A connection that ends before any password was tried ("Invalid user" then a
          preauth disconnect, as on a server without password login) is one failure.
        - Every failed password (or keyboard-interactive) is one failure, as before; a
          connection's close adds nothing to those.
        """
        kind = fact.kind
        conn = self._ssh.get(pid)
        if kind == "invalid-user":
            self._open_ssh(pid, fact)
            self._absorb_twin("failed", (fact.user, fact.source))  # OpenSSH's btmp twin
            return True
        if kind == "not-allowed":  # AllowUsers and friends: like an unknown user
            self._open_ssh(pid, fact)
            return True
        if kind == "pam-failed":
            # PAM's error comes first and is counted at once; the "Failed
            # keyboard-interactive/pam" line that follows it is the same attempt
            conn = conn or self._open_ssh(pid, fact)
            conn.fact = fact
            conn.counted += fact.repeat
            conn.pam_unmatched += fact.repeat
            self._emit_repeated(fact)
            return True
        if kind == "failed" and fact.method == "publickey":
            conn = conn or self._open_ssh(pid, fact)
            conn.fact = fact
            conn.keys_rejected += fact.repeat
            self._count("publickey-rejected", fact.repeat)
            return True
        if kind == "failed":
            conn = conn or self._open_ssh(pid, fact)
            conn.fact = fact
            if conn.pam_unmatched:
                twins = min(conn.pam_unmatched, fact.repeat)
                conn.pam_unmatched -= twins
                self._count("merged-pam", twins)
                if twins == fact.repeat:
                    return True
                fact = fact._replace(repeat=fact.repeat - twins)
            conn.counted += fact.repeat
            self._emit_repeated(fact)
            return True
        if kind == "accepted":
            if conn is not None:
                del self._ssh[pid]
                if conn.keys_rejected:
                    self._count("publickey-rejected-then-accepted")
            return False
        if kind == "scan":  # a connection that ended before any login attempt
            if not self.aggressive:
                self._count("noted-scan")
                return True
            if conn is None or conn.counted == 0:
                self._count("counted-scan")
                self._emit_auth(fact._replace(kind="failed"), "failed")
            self._ssh.pop(pid, None)
            return True
        if kind in ("preauth-close", "max-attempts"):
            if conn is not None and fact.source is None:  # OpenSSH 5-7: "Disconnecting: ..."
                fact = fact._replace(
                    user=fact.user or conn.fact.user,
                    source=conn.fact.source,
                    port=fact.port or conn.fact.port,
                )
            if kind == "preauth-close":
                self._ssh.pop(pid, None)
            elif conn is None:
                conn = self._open_ssh(pid, fact)
            if conn is None or conn.counted == 0:
                self._count(f"counted-at-{kind}")
                self._emit_auth(fact._replace(kind="failed"), "failed")
                if conn is not None:
                    conn.counted = 1
            return True
        return False

    def _dropbear_exit(self, fact: authlog.AuthFact, pid: int) -> None:
        """A Dropbear connection ended before it authenticated.

        Its address-less "nonexistent user" lines get the address now. A connection that
        named an existing user (`(user 'U', N fails)`) and had no line counted is one
        failure, as OpenSSH's "Connection closed by authenticating user" is: rejected
        public keys (Dropbear logs none), or, on a server without password logins (-s),
        a client that found nothing it could try. The "Max auth tries reached" exit adds
        nothing to failures already counted.
        """
        addr = self._db_addr.pop(pid, None)
        source = fact.source or (addr[0] if addr else None)
        port = fact.port or (addr[1] if addr else None)
        for _deadline, held_fact, observed in self._db_held.pop(pid, []):
            resolved = held_fact._replace(
                kind="failed", source=source, port=port, user=held_fact.user or fact.user
            )
            self._emit_auth(resolved, "failed", observed)
        counted = self._db_counted.pop(pid, 0)
        if fact.user and not counted:
            self._count("counted-at-exit-before-auth")
            self._emit_auth(fact._replace(kind="failed", source=source, port=port), "failed")

    def _emit_repeated(self, fact: authlog.AuthFact) -> None:
        """A failure line, once per attempt it stands for ("message repeated N times")."""
        for _ in range(fact.repeat):
            self._emit_auth(fact, "failed")

    def _open_ssh(self, pid: int, fact: authlog.AuthFact) -> _SshConnection:
        deadline = self.clock.monotonic() + SSH_GRACE
        conn = self._ssh[pid] = _SshConnection(fact, deadline)
        self._ssh.move_to_end(pid)
        self._bound(self._ssh)
        self._schedule(deadline)
        return conn

    def _expire_ssh(self, now: float) -> float | None:
        """Connections past the grace time without a close line: one failure each if they
        showed an unknown user or rejected keys and nothing was counted. Returns the next
        deadline."""
        # Deadlines are set once, at open, on the monotonic clock, and an opened
        # connection moves to the end: the table is in deadline order.
        while self._ssh:
            pid, conn = next(iter(self._ssh.items()))
            if conn.deadline > now:
                return conn.deadline
            del self._ssh[pid]
            if conn.counted == 0:
                self._count("counted-at-grace-timeout")
                self._emit_auth(conn.fact._replace(kind="failed"), "failed")
        return None

    def _emit_auth(self, fact: authlog.AuthFact, kind: str, observed: float | None = None) -> None:
        event = {"failed": "login-failed", "login": "login", "logout": "logout"}[kind]
        record = login_event(
            event,
            user=fact.user,
            source=fact.source,
            port=fact.port,
            service=fact.service,
            pid=fact.pid,
            tty=fact.tty,
            origin="authlog",
            time=fact.time,
            observed=observed,
        )
        key: Key = (fact.user, None) if kind == "logout" else (fact.user, fact.source)
        if kind == "logout":
            if self._take_seen(kind, key):
                self._count("merged-logout")
                return
        elif self._take_pending(kind, key):
            self._count(f"merged-{kind}")  # its utmp twin was waiting: now consumed
            self.ctx.emit(record)
            return
        if self._has_utmp:  # only utmp records have twins to wait for
            self._remember_seen(kind, key)
        self.ctx.emit(record)

    def _absorb_twin(self, kind: str, key: Key) -> None:
        """Drop the utmp record that mirrors an auth-log line which is not itself an event."""
        if self._take_pending(kind, key):
            self._count(f"merged-{kind}")
        elif self._has_utmp:
            self._remember_seen(kind, key)

    # --- utmp ---------------------------------------------------------------------
    def _on_wtmp(self, data: bytes) -> None:
        records, garbage = utmp.decode(data, self.layout)
        if garbage:
            self._count("garbage-record", garbage)
        for rec in records:
            if rec.type == utmp.USER_PROCESS:
                if rec.line:
                    self._remember(self._tty_user, rec.line, rec.user)
                self._from_utmp("login", rec, "wtmp")
            elif rec.type == utmp.DEAD_PROCESS:
                user = rec.user or self._tty_user.pop(rec.line, "")
                if not user:
                    # init reaping a getty or a boot-time entry: no session ended
                    self._count("dead-process-without-session")
                    continue
                self._from_utmp("logout", rec._replace(user=user), "wtmp")

    def _on_btmp(self, data: bytes) -> None:
        records, garbage = utmp.decode(data, self.layout)
        if garbage:
            self._count("garbage-record", garbage)
        for rec in records:
            self._from_utmp("failed", rec, "btmp")

    def _from_utmp(self, kind: str, rec: utmp.UtmpRecord, origin: str) -> None:
        source = rec.addr or rec.host or None
        ssh = rec.line.startswith("ssh") or (kind != "failed" and rec.line.startswith("pts"))
        service = "sshd" if ssh else "login"
        tty = None if rec.line.startswith("ssh:") or not rec.line else rec.line
        user = rec.user or None
        event = {"failed": "login-failed", "login": "login", "logout": "logout"}[kind]
        record = login_event(
            event,
            user=user,
            source=source,
            port=None,
            service=service,
            pid=rec.pid or None,
            tty=tty,
            origin=origin,
            time=timestamps.utmp(rec.tv_sec, rec.tv_usec),
            observed=self.clock.time(),
        )
        if kind == "logout":
            key: Key = (user, None)
            if user is not None and self._take_seen(kind, key):
                self._count("merged-logout")
                return
            self._remember_seen(kind, key)
            self.ctx.emit(record)
            return
        key = (user, source)
        if self._take_seen(kind, key):
            self._count(f"merged-{kind}")
            return
        if not self._auth_log_open():
            if kind == "failed" and self._is_invalid_user_record(rec, service, user):
                self._count("invalid-user-record")
                return
            self.ctx.emit(record)  # no auth log to wait for
            return
        if self.hold <= 0:
            self.ctx.emit(record)
            return
        deadline = self.clock.monotonic() + self.hold
        self._pending.append(_Pending(deadline, kind, key, record))
        if len(self._pending) > MAX_TRACKED:
            self._emit_pending(self._pending.popleft())
        self._schedule(deadline)

    def _is_invalid_user_record(self, rec: utmp.UtmpRecord, service: str, user: Any) -> bool:
        """Without an auth log: is this the record OpenSSH writes at "Invalid user"?

        For a user name unknown to the system sshd writes one btmp record when it meets
        the name and one per failed password after it, all with the same pid. The first
        one of a pid is not an attempt; without the log line to pair it with, the user
        database tells it apart.
        """
        if service != "sshd" or not rec.pid or not user or rec.pid in self._invalid_pids:
            return False
        import pwd  # built-in C module; only btmp-only systems (journald, no syslog) need it

        try:
            pwd.getpwnam(user)
        except KeyError:
            self._remember(self._invalid_pids, rec.pid, True)
            return True
        return False

    # --- dedup tables -------------------------------------------------------------
    def _remember_seen(self, kind: str, key: Key) -> None:
        table = self._seen[kind]
        now = self.clock.monotonic()
        while table:  # drop expired entries from the least recently used end
            oldest = next(iter(table.values()))
            if oldest and oldest[-1] >= now:
                break
            table.popitem(last=False)
        times = table.get(key)
        if times is None:
            times = table[key] = deque(maxlen=MAX_TWINS)
        times.append(now + self.hold)
        table.move_to_end(key)
        self._bound(table)

    def _take_seen(self, kind: str, key: Key) -> bool:
        """Consume one remembered auth-log event with this key, if still within hold."""
        table = self._seen[kind]
        times = table.get(key)
        now = self.clock.monotonic()
        while times and times[0] < now:
            times.popleft()
        if not times:
            table.pop(key, None)
            return False
        times.popleft()
        return True

    def _take_pending(self, kind: str, key: Key) -> bool:
        for item in self._pending:
            if item.kind == kind and item.key == key:
                self._pending.remove(item)
                return True
        return False

    def _remember(self, table: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        table[key] = value
        table.move_to_end(key)
        self._bound(table)

    def _bound(self, table: OrderedDict[Any, Any]) -> None:
        while len(table) > MAX_TRACKED:
            table.popitem(last=False)
            self._count("evicted")

    # --- timers -------------------------------------------------------------------
    def _schedule(self, deadline: float) -> None:
        if self._flush_timer is not None and not self._flush_timer.cancelled:
            if self._flush_at <= deadline:
                return
            self._flush_timer.cancel()
        self._flush_at = deadline
        self._flush_timer = self.ctx.call_later(deadline - self.clock.monotonic(), self._on_timer)

    def _on_timer(self) -> None:
        self._flush_timer = None
        self._flush(force=False)

    def _emit_pending(self, item: _Pending) -> None:
        self.ctx.emit(item.record)

    def _flush(self, force: bool, keep_pending: bool = False) -> None:
        """Emit what waited long enough (everything when stopping, but the utmp records
        waiting for twins with `keep_pending`); re-arm the timer."""
        now = self.clock.monotonic()
        keep: deque[_Pending] = deque()
        next_deadline: float | None = None
        # while journalctl reads the backlog (or is restarting), a utmp record's journal
        # twin may still come, however late: hold the records (up to CATCHUP_MAX)
        catching_up = self.journal is not None and not self.journal.caught_up
        for item in self._pending:
            ripe = item.deadline <= now
            if keep_pending or (
                ripe and catching_up and not force and now < item.deadline + CATCHUP_MAX
            ):
                keep.append(item)
                next_deadline = min(next_deadline or now + 0.5, now + 0.5)
            elif force or ripe:
                self._emit_pending(item)
            else:
                keep.append(item)
                next_deadline = min(next_deadline or item.deadline, item.deadline)
        self._pending = keep
        for pid in list(self._db_held):
            held = self._db_held[pid]
            due = [h for h in held if force or h[0] <= now]
            rest = [h for h in held if not (force or h[0] <= now)]
            for _deadline, fact, observed in due:
                self._count("dropbear-unresolved")
                self._emit_auth(fact._replace(kind="failed"), "failed", observed)
            if rest:
                self._db_held[pid] = rest
                next_deadline = min(next_deadline or rest[0][0], rest[0][0])
            else:
                del self._db_held[pid]
        if not force:  # at a stop, open connections are left to the next run's lines
            ssh_deadline = self._expire_ssh(now)
            if ssh_deadline is not None:
                next_deadline = min(next_deadline or ssh_deadline, ssh_deadline)
        if next_deadline is not None and not force:
            self._schedule(next_deadline)


def create(ctx: Context, section: dict[str, Any], state: dict[str, Any]) -> LoginCollector:
    return LoginCollector(ctx, section, state)


def auth_source(section: dict[str, Any]) -> tuple[str, str]:
    """Where auth messages come from, "files" or "journal", and why."""
    mode = section["journal"]
    if mode == "off":
        return "files", "collectors.login.journal = off"
    if mode == "on":
        return "journal", "collectors.login.journal = on"
    present = [p for p in section["auth_logs"] if os.path.exists(p)]
    if present:
        return "files", f"{present[0]} exists"
    if not journal.journal_present(section["journal_directory"]):
        return "files", "no auth log, and journald is not running: waiting for the files"
    if journal.find_program(section["journalctl"]) is None:
        return "files", f"no auth log, and {section['journalctl']} is not installed"
    return "journal", "no auth log file exists; the journal does"


def describe(section: dict[str, Any]) -> list[str]:
    """What `check` prints: the backend the collector would use and which files exist."""
    backend = section["backend"]
    if backend == "poll":
        how = f"poll every {section['poll_interval']} s"
    else:
        try:
            from defender_agent.linux.inotify import Inotify

            Inotify().close()
            how = "inotify"
        except Exception as exc:  # OSError, or MemoryError from ctypes under W^X
            how = f"poll every {section['poll_interval']} s (inotify unavailable: {exc})"
    layout = section["utmp_layout"]
    if layout == "auto":
        layout = f"{utmp.layout_for_machine()} (auto)"
    source, reason = auth_source(section)
    if source == "journal":
        where = section["journal_directory"] or "the system journal"
        auth = f"auth messages: {where}, through {section['journalctl']} --follow ({reason})"
        if journal.find_program(section["journalctl"]) is None:
            auth += f"; {section['journalctl']} NOT FOUND: no login will be seen"
        logs = []
    else:
        auth = f"auth messages: log files ({reason})"
        logs = list(section["auth_logs"])
    lines = [auth, f"backend: {how}", f"utmp layout: {layout}"]
    paths = [*logs, section["wtmp"], section["btmp"]]
    for path in (p for p in paths if p):
        if not os.path.exists(path):
            status = "missing (waited for)"
        elif os.access(path, os.R_OK):
            status = "present"
        else:
            status = "present but not readable"
        lines.append(f"{path}: {status}")
    return lines
