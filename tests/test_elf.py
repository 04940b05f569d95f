"""Init's ELF reader and its ld.so.conf include expansion (what it checks before exec, to say
which loader or library a command lacks). Needs no root."""

from __future__ import annotations

import fnmatch
import os
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyctr.init import elf


def test_reads_the_loader_and_libraries_of_a_dynamic_executable() -> None:
    info = elf.read_elf(sys.executable)  # this very interpreter: dynamically linked
    assert info is not None
    assert info.interpreter is not None and os.path.exists(info.interpreter)
    assert "libc.so.6" in info.needed


def test_a_script_an_empty_file_and_garbage_are_not_elf(tmp_path: Path) -> None:
    (tmp_path / "script").write_text("#!/bin/sh\necho hi\n")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "garbage").write_bytes(b"\x7fELF" + b"\xff" * 60)
    for name in ("script", "empty", "garbage", "missing"):
        assert elf.read_elf(str(tmp_path / name)) is None


@given(st.binary(min_size=0, max_size=200), st.sampled_from([1, 2]), st.sampled_from([1, 2]))
def test_a_corrupt_elf_header_is_not_elf_and_raises_nothing(tail: bytes, width: int,
                                                            order: int) -> None:
    # Random sizes and offsets in the header: read_elf must neither raise nor believe them
    # (a size field of gigabytes must not be allocated).
    with tempfile.NamedTemporaryFile() as file:
        file.write(b"\x7fELF" + bytes([width, order]) + tail)
        file.flush()
        info = elf.read_elf(file.name)
    assert info is None or isinstance(info, elf.ElfInfo)


def test_a_truncated_executable_is_not_elf(tmp_path: Path) -> None:
    whole = Path("/bin/true").read_bytes()
    for size in (16, 52, 64, 200, 1000):
        (tmp_path / "cut").write_bytes(whole[:size])
        assert elf.read_elf(str(tmp_path / "cut")) is None, size


def test_nothing_is_missing_for_a_host_binary() -> None:
    assert elf.missing_pieces("/bin/true", {}) == (None, [])


ALPHABET = st.text(alphabet="ab*?.", max_size=8)


@given(ALPHABET.filter(lambda t: "*" not in t and "?" not in t), ALPHABET)
def test_wildcards_match_as_fnmatch_does(text: str, pattern: str) -> None:
    assert elf.wildcard_match(text, pattern) == fnmatch.fnmatchcase(text, pattern)


def test_include_expands_like_ldconfig(tmp_path: Path) -> None:
    for name in ("b.conf", "a.conf", ".hidden.conf", "notes.txt"):
        (tmp_path / name).write_text("")
    assert elf.expand_include(f"{tmp_path}/*.conf") == [f"{tmp_path}/a.conf",
                                                       f"{tmp_path}/b.conf"]
    assert elf.expand_include(f"{tmp_path}/notes.txt") == [f"{tmp_path}/notes.txt"]
    assert elf.expand_include(f"{tmp_path}/nothing/*.conf") == []


@pytest.mark.parametrize("relative", [True, False])
def test_ld_so_conf_includes_relative_to_the_including_file(tmp_path: Path,
                                                            relative: bool) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "x.conf").write_text("/opt/lib # a comment\n")
    pattern = "conf.d/*.conf" if relative else f"{tmp_path}/conf.d/*.conf"
    (tmp_path / "ld.so.conf").write_text(f"include {pattern}\n/usr/lib/extra\n")
    assert elf._ld_so_conf(str(tmp_path / "ld.so.conf"), depth=0) == ["/opt/lib",
                                                                      "/usr/lib/extra"]
