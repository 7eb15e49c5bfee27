"""IP address bytes <-> text, exactly as glibc's inet_ntop/inet_pton (and so `socket`) do.

The agent needs this for utmp addresses and /proc/net/if_inet6; importing `socket` for it
would cost ~1.5 MiB of RSS on the device for the service's whole life (socket.py builds
its enums at import). IPv6 text follows RFC 5952: lower-case hex, no leading zeros, the
longest run (first on a tie) of two or more zero groups as "::". Like glibc, an address
whose first 96 bits are zero with a non-zero 7th group (IPv4-compatible, "::1.2.3.4") or
that is IPv4-mapped ("::ffff:1.2.3.4") ends in dotted-quad form.
"""

from __future__ import annotations

V4_LEN, V6_LEN = 4, 16


def ntop4(raw: bytes) -> str:
    if len(raw) != V4_LEN:
        raise ValueError(f"an IPv4 address is 4 bytes, not {len(raw)}")
    return f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}"


def ntop6(raw: bytes) -> str:
    if len(raw) != V6_LEN:
        raise ValueError(f"an IPv6 address is 16 bytes, not {len(raw)}")
    words = [raw[i] << 8 | raw[i + 1] for i in range(0, 16, 2)]
    # the longest run of zero words (the first of equal ones), if it is 2+ long
    best_base, best_len = -1, 0
    cur_base, cur_len = -1, 0
    for i, word in enumerate(words):
        if word == 0:
            if cur_base < 0:
                cur_base, cur_len = i, 1
            else:
                cur_len += 1
            if cur_len > best_len:
                best_base, best_len = cur_base, cur_len
        else:
            cur_base = -1
    if best_len < 2:
        best_base = -1
    parts: list[str] = []
    i = 0
    while i < 8:
        if i == best_base:
            parts.append(":")
            i += best_len
            continue
        if i:
            parts.append(":")
        if i == 6 and best_base == 0 and (best_len == 6 or (best_len == 5 and words[5] == 0xFFFF)):
            parts.append(ntop4(raw[12:]))
            break
        parts.append(f"{words[i]:x}")
        i += 1
    else:
        if best_base >= 0 and best_base + best_len == 8:
            parts.append(":")
    return "".join(parts)


def ntop(raw: bytes) -> str:
    """4 bytes -> dotted quad; 16 bytes -> IPv6 text."""
    return ntop4(raw) if len(raw) == V4_LEN else ntop6(raw)


def pton4(text: str) -> bytes:
    """Dotted quad -> 4 bytes; as strict as glibc (four decimal parts, no leading zeros)."""
    parts = text.split(".")
    if len(parts) != 4:
        raise ValueError(f"{text!r} is not an IPv4 address")
    out = bytearray()
    for part in parts:
        if not part or not part.isdigit() or not part.isascii() or len(part) > 3:
            raise ValueError(f"{text!r} is not an IPv4 address")
        if (len(part) > 1 and part[0] == "0") or int(part) > 255:
            raise ValueError(f"{text!r} is not an IPv4 address")
        out.append(int(part))
    return bytes(out)


def pton6(text: str) -> bytes:
    """IPv6 text (any valid form, optionally ending in a dotted quad) -> 16 bytes."""
    bad = ValueError(f"{text!r} is not an IPv6 address")
    if text.count("::") > 1 or ":::" in text:
        raise bad
    head_text, sep, tail_text = text.partition("::")
    head = head_text.split(":") if head_text else []
    tail = tail_text.split(":") if tail_text else []
    if not sep and not head:
        raise bad
    v4 = b""
    last = tail if sep else head
    if last and "." in last[-1]:
        v4 = pton4(last.pop())
    words = []
    for group in [*head, *tail]:
        if not 1 <= len(group) <= 4 or not all(c in "0123456789abcdefABCDEF" for c in group):
            raise bad
        words.append(int(group, 16))
    slots = 8 - len(v4) // 2
    if (sep and len(words) >= slots) or (not sep and len(words) != slots):
        raise bad
    fill = [0] * (slots - len(words))
    out = bytearray()
    for word in [*(int(g, 16) for g in head), *fill, *(int(g, 16) for g in tail)]:
        out += bytes((word >> 8, word & 0xFF))
    return bytes(out) + v4


def pton(text: str) -> bytes:
    """IPv4 or IPv6 text -> 4 or 16 bytes (ValueError when it is neither)."""
    return pton6(text) if ":" in text else pton4(text)
