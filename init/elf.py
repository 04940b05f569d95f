"""Why an executable that exists might still not run: its ELF interpreter (the dynamic loader)
or a shared library it needs is missing from the root filesystem.

execve() reports a missing loader as ENOENT, the same as a missing program, and a missing
library only shows once the loader prints its complaint and exits 127. Init checks both before
exec so the user gets one clear line instead. The library search is a close approximation of
ld.so's: DT_RPATH/DT_RUNPATH (with $ORIGIN), LD_LIBRARY_PATH, /etc/ld.so.conf, the default
directories, and a last look in /etc/ld.so.cache's string table.
"""

from __future__ import annotations

import os
import struct

_PT_INTERP = 3
_PT_DYNAMIC = 2
_PT_LOAD = 1
_DT_NEEDED = 1
_DT_STRTAB = 5
_DT_STRSZ = 10
_DT_RPATH = 15
_DT_RUNPATH = 29

_DEFAULT_DIRS = (
    "/lib", "/usr/lib", "/lib64", "/usr/lib64", "/lib32", "/usr/lib32",
    "/usr/local/lib",
)
_MAX_DEPENDENCIES = 256
_MAX_READ = 1 << 20
"""The most bytes one piece of an ELF file may claim (libc's string table is 32 KiB): a
corrupt size field must not make us allocate gigabytes."""


class ElfInfo:
    __slots__ = ("interpreter", "needed", "search_paths")

    def __init__(self, interpreter: str | None, needed: list[str], search_paths: list[str]):
        self.interpreter = interpreter
        self.needed = needed
        self.search_paths = search_paths


def read_elf(path: str) -> ElfInfo | None:
    """The interpreter, needed libraries and embedded search paths of ``path``; None when it is
    not an ELF file (a script, say) or cannot be read or parsed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return _parse(fd, os.path.dirname(path))
    except (OSError, struct.error, ValueError, OverflowError):  # Overflow: an offset past 2**63
        return None
    finally:
        os.close(fd)


def _parse(fd: int, origin: str) -> ElfInfo | None:
    # Read piece by piece at their offsets: the headers, the dynamic section and its strings
    # are a few KiB of files that run to megabytes (libc), and this runs before every exec.
    # (Not mmap: its module alone took longer to import than all these reads.)
    header = os.pread(fd, 64, 0)
    if header[:4] != b"\x7fELF" or len(header) < 52:
        return None
    is64 = header[4] == 2
    endian = "<" if header[5] == 1 else ">"
    if is64:
        phoff, = struct.unpack_from(endian + "Q", header, 0x20)
        phentsize, phnum = struct.unpack_from(endian + "HH", header, 0x36)
        ph_format, dyn_format = endian + "IIQQQQQQ", endian + "qQ"
    else:
        phoff, = struct.unpack_from(endian + "I", header, 0x1C)
        phentsize, phnum = struct.unpack_from(endian + "HH", header, 0x2A)
        ph_format, dyn_format = endian + "IIIIIIII", endian + "iI"
    table = _read(fd, phnum * phentsize, phoff)
    interpreter = None
    dynamic: tuple[int, int] | None = None
    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    for index in range(phnum):
        fields = struct.unpack_from(ph_format, table, index * phentsize)
        if is64:
            p_type, _, p_offset, p_vaddr, _, p_filesz = fields[:6]
        else:
            p_type, p_offset, p_vaddr, _, p_filesz = fields[:5]
        if p_type == _PT_INTERP:
            interpreter = _read(fd, p_filesz, p_offset).rstrip(b"\0").decode()
        elif p_type == _PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
        elif p_type == _PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
    if dynamic is None:
        return ElfInfo(interpreter, [], [])
    section = _read(fd, dynamic[1], dynamic[0])
    entries: list[tuple[int, int]] = []
    for position in range(0, len(section), struct.calcsize(dyn_format)):
        tag, value = struct.unpack_from(dyn_format, section, position)
        if tag == 0:
            break
        entries.append((tag, value))
    strtab = next((value for tag, value in entries if tag == _DT_STRTAB), None)
    if strtab is None:
        return ElfInfo(interpreter, [], [])
    strsz = next((value for tag, value in entries if tag == _DT_STRSZ), _MAX_READ)
    strings = os.pread(fd, min(strsz, _MAX_READ), _vaddr_to_offset(strtab, loads))

    def string(offset: int) -> str:
        end = strings.find(b"\0", offset)
        if end < 0:
            raise ValueError("unterminated string")
        return strings[offset:end].decode()

    needed = [string(value) for tag, value in entries if tag == _DT_NEEDED]
    paths: list[str] = []
    for tag, value in entries:
        if tag in (_DT_RPATH, _DT_RUNPATH):
            paths += [p.replace("$ORIGIN", origin).replace("${ORIGIN}", origin)
                      for p in string(value).split(":") if p]
    return ElfInfo(interpreter, needed, paths)


def _read(fd: int, size: int, offset: int) -> bytes:
    if size > _MAX_READ:
        raise ValueError(f"an ELF piece of {size} bytes")
    data = os.pread(fd, size, offset)
    if len(data) < size:
        raise ValueError("the file ends inside an ELF piece")
    return data


def _vaddr_to_offset(vaddr: int, loads: list[tuple[int, int, int]]) -> int:
    for start, offset, size in loads:
        if start <= vaddr < start + size:
            return vaddr - start + offset
    raise ValueError("address outside every loaded segment")


def library_dirs(env: dict[str, str]) -> list[str]:
    """Where ld.so would look, in the current root (call it after the root has changed)."""
    dirs = [d for d in env.get("LD_LIBRARY_PATH", "").split(":") if d]
    dirs += _ld_so_conf("/etc/ld.so.conf", depth=0)
    dirs += list(_DEFAULT_DIRS)
    machine = os.uname().machine
    dirs += [f"/lib/{machine}-linux-gnu", f"/usr/lib/{machine}-linux-gnu"]
    return dirs


def _ld_so_conf(path: str, depth: int) -> list[str]:
    if depth > 4:
        return []
    try:
        with open(path) as file:
            lines = file.read().splitlines()
    except OSError:
        return []
    dirs: list[str] = []
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if line.startswith("include "):
            pattern = line.split(None, 1)[1].strip()
            if not pattern.startswith("/"):  # as ldconfig: relative to the including file
                pattern = f"{os.path.dirname(path)}/{pattern}"
            for included in expand_include(pattern):
                dirs += _ld_so_conf(included, depth + 1)
        elif line:
            dirs.append(line)
    return dirs


def expand_include(pattern: str) -> list[str]:
    """The files an ``include`` line names, sorted: wildcards (``*``, ``?``) in the last
    path component only, which is all ld.so.conf files use. Not ``glob``: it imports ``re``,
    ~5 ms on the way to the workload's exec."""
    directory, _, name = pattern.rpartition("/")
    if "*" not in name and "?" not in name:
        return [pattern] if os.path.isfile(pattern) else []
    try:
        entries = os.listdir(directory or "/")
    except OSError:
        return []
    return sorted(f"{directory}/{entry}" for entry in entries
                  if not (entry.startswith(".") and not name.startswith("."))
                  and wildcard_match(entry, name))


def wildcard_match(text: str, pattern: str) -> bool:
    """Whether ``text`` matches ``pattern``, where ``*`` is any run of characters and ``?``
    any one character (shell style, without brackets)."""
    t = p = 0
    star, resume = -1, 0
    while t < len(text):
        if p < len(pattern) and pattern[p] == "*":
            star, resume = p, t
            p += 1
        elif p < len(pattern) and pattern[p] in ("?", text[t]):
            t += 1
            p += 1
        elif star >= 0:  # let the last star take one more character
            p, resume = star + 1, resume + 1
            t = resume
        else:
            return False
    return all(char == "*" for char in pattern[p:])


def missing_pieces(path: str, env: dict[str, str]) -> tuple[str | None, list[str]]:
    """(missing interpreter or None, missing libraries) for the executable ``path``,
    following the needed libraries of the libraries found."""
    info = read_elf(path)
    if info is None:
        return None, []
    if info.interpreter is not None and not os.path.exists(info.interpreter):
        return info.interpreter, []
    if not info.needed:
        return None, []
    dirs = library_dirs(env)
    cache: bytes | None = None
    missing: list[str] = []
    seen: set[str] = set()
    queue = [(name, info.search_paths) for name in info.needed]
    while queue and len(seen) < _MAX_DEPENDENCIES:
        name, extra = queue.pop()
        if name in seen:
            continue
        seen.add(name)
        found = _find_library(name, extra + dirs)
        if found is None:
            if cache is None:
                cache = _read_cache()
            found = _find_in_cache(name, cache)
            if found is None:
                missing.append(name)
                continue
        sub = read_elf(found)
        if sub is not None:
            queue += [(dep, sub.search_paths) for dep in sub.needed]
    return None, sorted(missing)


def _find_library(name: str, dirs: list[str]) -> str | None:
    if "/" in name:
        return name if os.path.exists(name) else None
    for directory in dirs:
        candidate = f"{directory}/{name}"
        if os.path.exists(candidate):
            return candidate
    return None


def _find_in_cache(name: str, cache: bytes) -> str | None:
    """A path in ld.so.cache's string table that ends in /name and exists in this root."""
    needle = b"/" + os.fsencode(name) + b"\0"
    position = cache.find(needle)
    while position >= 0:
        start = cache.rfind(b"\0", 0, position) + 1
        candidate = os.fsdecode(cache[start : position + len(needle) - 1])
        if candidate.startswith("/") and os.path.exists(candidate):
            return candidate
        position = cache.find(needle, position + 1)
    return None


def _read_cache() -> bytes:
    try:
        with open("/etc/ld.so.cache", "rb") as file:
            return file.read()
    except OSError:
        return b""
