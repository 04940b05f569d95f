"""What the CLI loads before it forks the init: everything imported then delays the
workload's start (issue "Fast"), so the heavy and the merely slow modules must stay out.
This counts modules, not milliseconds: timings belong to bench/startup."""

from __future__ import annotations

import subprocess
import sys

import pytest

# trio and structlog (~120 ms together here) wait until after the fork. enum (pulled in by
# the signal and socket wrappers), re (glob, argparse), selectors, argparse, dataclasses,
# json, typing and ctypes cost milliseconds each, mmap (a shared library) half of one;
# termios and tty are for -t only.
KEPT_OUT = ("trio", "structlog", "orjson", "enum", "re", "selectors", "argparse",
            "dataclasses", "json", "typing", "glob", "socket", "signal", "subprocess", "ctypes",
            "termios", "tty", "mmap")


@pytest.mark.parametrize("entry", ["pyctr.supervisor.cli", "pyctr.init"])
def test_nothing_heavy_before_the_fork(entry: str) -> None:
    # An editable install's import hook brings re and enum along when the first pyctr module
    # is found: what was loaded by then is not ours, so the probe starts after it.
    probe = ("import sys; import pyctr.protocol.codec; before = set(sys.modules); "
             f"import {entry}; "
             f"print(' '.join(sorted(set({KEPT_OUT!r}) & (set(sys.modules) - before))))")
    loaded = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True,
                            text=True, check=True).stdout.split()
    assert loaded == []


def test_the_package_loads_its_names_on_first_use() -> None:
    probe = ("import sys; import pyctr.protocol.codec; before = set(sys.modules); "
             "import pyctr.supervisor; "
             "print(' '.join(sorted(set(sys.modules) - before))); "
             "from pyctr.supervisor import ContainerConfig, ContainerResult, PyctrError; "
             "print(ContainerConfig.__module__, ContainerResult.__module__, PyctrError.__module__)")
    out = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert [name for name in out[0].split() if name.startswith("pyctr")] == ["pyctr.supervisor"]
    assert out[1] == "pyctr.supervisor.config pyctr.supervisor.result pyctr.supervisor.errors"
