"""Call a few C library functions without importing the `ctypes` package.

The standard library has no binding for inotify_init1 and friends, so the agent calls
them through the C module `_ctypes`, the engine under `ctypes`. Importing the `ctypes`
package on top of it costs 0.45 MiB of RSS on Python 3.13 and 0.8 MiB on 3.14, where it
also loads `sysconfig` and `threading` (measured in Debian 13 and sid chroots), for the
agent's whole life. What is used here is what ctypes/__init__.py builds on (CFuncPtr with
_flags_/_restype_, _SimpleCData with _type_, dlopen, get_errno), unchanged since Python
2.5. Where it is missing, `function()` falls back to the `ctypes` package.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any, Callable

# argument and result types by ctypes' one-letter codes: i int, I unsigned int, z char *
CODES = ("i", "I", "z")

_types: dict[str, Any] = {}
_handle: Any = None


class _Library:
    """What CFuncPtr((name, library)) needs of a library: its dlopen handle."""

    __slots__ = ("_handle",)

    def __init__(self, handle: int) -> None:
        self._handle = handle


def _simple(code: str) -> Any:
    import _ctypes

    cls = _types.get(code)
    if cls is None:
        cls = _types[code] = type(f"c_{code}", (_ctypes._SimpleCData,), {"_type_": code})
    return cls


def _from_ctypes(name: str, restype: str, argtypes: tuple[str, ...]) -> Callable[..., Any]:
    import ctypes

    by_code = {"i": ctypes.c_int, "I": ctypes.c_uint32, "z": ctypes.c_char_p}
    func = getattr(ctypes.CDLL(None, use_errno=True), name)
    func.restype = by_code[restype]
    func.argtypes = [by_code[c] for c in argtypes]
    return func  # type: ignore[no-any-return]


def function(name: str, restype: str, argtypes: tuple[str, ...]) -> Callable[..., Any]:
    """The C library's `name` (dlopen(NULL): the libc Python itself links, glibc or musl),
    setting errno for errno(); AttributeError when the library lacks it."""
    global _handle
    try:
        import _ctypes

        if _handle is None:
            _handle = _Library(_ctypes.dlopen(None, _ctypes.RTLD_GLOBAL))  # type: ignore[arg-type]
        flags = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        proto = type(
            f"_{name}",
            (_ctypes.CFuncPtr,),
            {"_flags_": flags, "_restype_": _simple(restype)},
        )
        func = proto((name, _handle))
        func.argtypes = [_simple(code) for code in argtypes]
        return func  # type: ignore[no-any-return]
    except (ImportError, TypeError):  # a Python whose _ctypes differs: the public way
        return _from_ctypes(name, restype, argtypes)


def errno() -> int:
    """errno as the last call made through function() left it."""
    try:
        import _ctypes

        return int(_ctypes.get_errno())
    except (ImportError, AttributeError):
        import ctypes

        return ctypes.get_errno()


def pinned(data: bytes) -> tuple[Any, int]:
    """A C buffer holding a copy of `data`, and its address: for a system call that takes a
    pointer inside a structure (SO_ATTACH_FILTER's sock_fprog). Keep the buffer for as long
    as the kernel may read it."""
    try:
        import _ctypes

        fields = {"_type_": _simple("c"), "_length_": len(data)}
        array: Any = type(f"c_char_Array_{len(data)}", (_ctypes.Array,), fields)
        buf = array.from_buffer_copy(data)
        return buf, int(_ctypes.addressof(buf))
    except (ImportError, TypeError, AttributeError):  # a Python whose _ctypes differs
        import ctypes

        cbuf = ctypes.create_string_buffer(data, len(data))
        return cbuf, ctypes.addressof(cbuf)
