"""seccomp in running containers: a profile in docker's format given with
``--security-opt seccomp=FILE``, ``linux.seccomp`` from a bundle, and the one-line refusals of
bad ones. (What the default profile refuses is in test_escape.py; the compiler and the
profile's contents in test_seccomp.py.)"""

from __future__ import annotations

import errno
import json
from pathlib import Path

from conftest import requires_root
from helpers import assert_one_line_error, run_cli
from test_spec_runtime import ok, run_bundle, spec_document

pytestmark = requires_root

MKDIR = "mkdir /tmp/made && echo made || echo refused"


def test_a_profile_file_in_dockers_format_is_applied(rootfs: Path, tmp_path: Path) -> None:
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": errno.EACCES}],
    }))
    run = run_cli("--security-opt", f"seccomp={profile}", str(rootfs), "/bin/sh", "-c",
                  f"{MKDIR}; grep Seccomp: /proc/self/status")
    assert run.returncode == 0, run.stderr
    assert "Permission denied" in run.stderr  # EACCES, as the profile says, not EPERM
    assert run.stdout.split() == ["refused", "Seccomp:", "2"]


def test_without_the_profile_the_same_command_works(rootfs: Path) -> None:
    run = run_cli(str(rootfs), "/bin/sh", "-c", MKDIR)
    assert run.stdout.split() == ["made"], run.stderr


def test_linux_seccomp_from_a_bundle_is_applied(rootfs: Path, tmp_path: Path) -> None:
    document = spec_document(rootfs, "/bin/sh", "-c", MKDIR)
    document["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": errno.EROFS}],
    }
    run = run_bundle(tmp_path / "bundle", document)
    assert ok(run).split() == ["refused"]
    assert "Read-only file system" in run.stderr


def test_a_bundle_without_linux_seccomp_runs_unfiltered(rootfs: Path, tmp_path: Path) -> None:
    document = spec_document(rootfs, "/bin/grep", "Seccomp:", "/proc/self/status")
    del document["linux"]["seccomp"]
    assert ok(run_bundle(tmp_path / "bundle", document)).split() == ["Seccomp:", "0"]


def test_a_bad_profile_file_is_one_line(rootfs: Path, tmp_path: Path) -> None:
    profile = tmp_path / "profile.json"
    profile.write_text('{"defaultAction": "SCMP_ACT_FOO"}')
    run = run_cli("--security-opt", f"seccomp={profile}", str(rootfs), "/bin/true")
    assert run.returncode == 125
    assert_one_line_error(run, str(profile), "SCMP_ACT_FOO")


def test_a_missing_profile_file_is_one_line(rootfs: Path, tmp_path: Path) -> None:
    run = run_cli("--security-opt", f"seccomp={tmp_path}/none.json", str(rootfs), "/bin/true")
    assert run.returncode == 125
    assert_one_line_error(run, "none.json")


def test_a_bad_linux_seccomp_is_one_line_naming_the_field(rootfs: Path,
                                                          tmp_path: Path) -> None:
    document = spec_document(rootfs, "/bin/true")
    document["linux"]["seccomp"]["syscalls"][0]["action"] = "SCMP_ACT_BOGUS"
    run = run_bundle(tmp_path / "bundle", document)
    assert run.returncode == 125
    assert_one_line_error(run, "linux.seccomp.syscalls[0].action", "SCMP_ACT_BOGUS")
