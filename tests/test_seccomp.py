"""Seccomp: docker's profile format -> linux.seccomp -> a BPF program -> the kernel.

Unit tests of the conversion (capabilities, architectures, kernel versions), of the checks on
a ``linux.seccomp`` and on a profile file (one line naming the field), and of the compiled
program, run through a small classic-BPF interpreter for the x86 and x32 ABIs this machine's
programs do not use. Then the real thing, as root, without a container: a forked child sets
no_new_privs, installs the program and makes system calls, and reports each errno through a
pipe.
"""

from __future__ import annotations

import copy
import ctypes
import errno
import json
import os
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import requires_root

from pyctr.linux import seccomp as linux_seccomp
from pyctr.linux.seccomp import filter_flags, install_filter
from pyctr.linux.syscalls import SyscallError
from pyctr.spec.model import SpecError
from pyctr.spec.seccomp import (
    DEFAULT_PROFILE,
    check_linux_seccomp,
    default_linux_seccomp,
    is_default_linux_seccomp,
    profile_to_linux_seccomp,
    read_profile,
)
from pyctr.supervisor import seccomp
from pyctr.supervisor.errors import PyctrError

MACHINE = os.uname().machine
DOCKER_DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]
ALLOW = 0x7FFF0000
ERRNO = 0x00050000
EPERM_ACTION = ERRNO | errno.EPERM
ENOSYS_ACTION = ERRNO | errno.ENOSYS
KERNEL = tuple(int(part) for part in os.uname().release.split("-")[0].split(".")[:2])

try:
    seccomp.libseccomp_version()
    HAVE_LIBSECCOMP = True
except PyctrError:
    HAVE_LIBSECCOMP = False
requires_libseccomp = pytest.mark.skipif(not HAVE_LIBSECCOMP, reason="libseccomp.so.2 missing")
x86_64_only = pytest.mark.skipif(MACHINE != "x86_64", reason="system call numbers of x86_64")


@pytest.fixture(autouse=True)
def _no_filter_in_the_test_process() -> Iterator[None]:
    """Every filter goes into a forked child, never into pytest's own process."""
    yield
    assert seccomp_mode() == 0


def rules_for(value: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [rule for rule in value["syscalls"] if name in rule["names"]]


def allowed(value: dict[str, Any], name: str) -> bool:
    """Allowed by an unconditional rule."""
    return any(rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("args")
               for rule in rules_for(value, name))


# -- Conversion ---------------------------------------------------------------------------


def test_the_remembered_default_is_the_conversion_and_each_caller_gets_its_own() -> None:
    # The library converts the default profile once per set of capabilities: what it hands
    # out must be exactly the conversion, and changing one copy must not change the next.
    expected = profile_to_linux_seccomp(DEFAULT_PROFILE, DOCKER_DEFAULT_CAPS)
    first = default_linux_seccomp(DOCKER_DEFAULT_CAPS)
    assert first == expected
    first["syscalls"][0]["names"].append("reboot")
    first["defaultAction"] = "SCMP_ACT_ALLOW"
    second = default_linux_seccomp([name.lower() for name in DOCKER_DEFAULT_CAPS])
    assert second == expected
    assert is_default_linux_seccomp(second, DOCKER_DEFAULT_CAPS)
    assert not is_default_linux_seccomp(first, DOCKER_DEFAULT_CAPS)
    # Another set of capabilities, another profile (sys_admin's rules): not "the default".
    assert not is_default_linux_seccomp(second, [*DOCKER_DEFAULT_CAPS, "CAP_SYS_ADMIN"])
    assert default_linux_seccomp(["CAP_SYS_ADMIN"]) == profile_to_linux_seccomp(
        DEFAULT_PROFILE, ["CAP_SYS_ADMIN"])


def test_default_profile_without_privilege() -> None:
    value = profile_to_linux_seccomp(DEFAULT_PROFILE, DOCKER_DEFAULT_CAPS, "x86_64")
    assert value["defaultAction"] == "SCMP_ACT_ERRNO"
    assert value["defaultErrnoRet"] == errno.EPERM
    assert value["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    for name in ("read", "execve", "futex", "clock_gettime", "chroot", "arch_prctl"):
        assert allowed(value, name), name
    for name in ("mount", "umount2", "pivot_root", "unshare", "setns", "bpf", "init_module",
                 "reboot", "ptrace", "process_vm_readv", "settimeofday", "open_by_handle_at",
                 "perf_event_open", "cacheflush", "lsm_set_self_attr"):
        assert not rules_for(value, name), name
    for name in ("keyctl", "add_key", "request_key", "swapon", "userfaultfd", "kexec_load"):
        (rule,) = rules_for(value, name)
        assert (rule["action"], rule["errnoRet"]) == ("SCMP_ACT_ERRNO", errno.EPERM)
    (clone,) = rules_for(value, "clone")
    assert clone["args"] == [{"index": 0, "value": 0x7E020000, "valueTwo": 0,
                              "op": "SCMP_CMP_MASKED_EQ"}]
    (clone3,) = rules_for(value, "clone3")
    assert (clone3["action"], clone3["errnoRet"]) == ("SCMP_ACT_ERRNO", errno.ENOSYS)
    personas = sorted(rule["args"][0]["value"] for rule in rules_for(value, "personality"))
    assert personas == [0, 8, 0x20000, 0x20008, 0xFFFFFFFF]
    # every family but AF_ALG (38) and AF_VSOCK (40)
    assert [rule["args"] for rule in rules_for(value, "socket")] == [
        [{"index": 0, "value": 38, "op": "SCMP_CMP_LT"}],
        [{"index": 0, "value": 39, "op": "SCMP_CMP_EQ"}],
        [{"index": 0, "value": 40, "op": "SCMP_CMP_GT"}]]
    for rule in value["syscalls"]:
        assert set(rule) <= {"names", "action", "errnoRet", "args"}
    check_linux_seccomp(value)


@pytest.mark.parametrize(("cap", "names"), [
    ("CAP_SYS_ADMIN", ["mount", "umount2", "pivot_root", "unshare", "setns", "bpf",
                       "perf_event_open", "fanotify_init", "lookup_dcookie", "quotactl",
                       "sethostname", "clone", "clone3"]),
    ("CAP_SYS_MODULE", ["init_module", "finit_module", "delete_module"]),
    ("CAP_SYS_BOOT", ["reboot"]),
    ("CAP_SYS_PTRACE", ["ptrace", "process_vm_readv", "process_vm_writev", "kcmp"]),
    ("CAP_SYS_TIME", ["settimeofday", "clock_settime"]),
    ("CAP_DAC_READ_SEARCH", ["open_by_handle_at"]),
    ("CAP_SYS_PACCT", ["acct"]),
])
def test_capabilities_unlock_their_calls(cap: str, names: list[str]) -> None:
    value = profile_to_linux_seccomp(DEFAULT_PROFILE, [*DOCKER_DEFAULT_CAPS, cap], "x86_64")
    for name in names:
        assert allowed(value, name), name
    for name in ("keyctl", "swapon", "kexec_load", "kexec_file_load"):
        assert not allowed(value, name)


def test_sys_admin_replaces_the_clone_rules() -> None:
    value = profile_to_linux_seccomp(DEFAULT_PROFILE, ["sys_admin"], "x86_64")
    assert [rule.get("args") for rule in rules_for(value, "clone")] == [None]
    assert [rule["action"] for rule in rules_for(value, "clone3")] == ["SCMP_ACT_ALLOW"]


@pytest.mark.parametrize(("arch", "architectures", "present", "absent"), [
    ("x86_64", ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
     ["arch_prctl", "modify_ldt"], ["cacheflush", "set_tls"]),
    ("amd64", ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"], ["arch_prctl"], []),
    ("aarch64", ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"], ["cacheflush", "set_tls"],
     ["arch_prctl"]),
    ("s390x", ["SCMP_ARCH_S390X"], ["s390_runtime_instr"], ["arch_prctl"]),
])
def test_arch_map_and_arch_rules(arch: str, architectures: list[str], present: list[str],
                                 absent: list[str]) -> None:
    value = profile_to_linux_seccomp(DEFAULT_PROFILE, [], arch)
    assert value["architectures"] == architectures
    for name in present:
        assert allowed(value, name), name
    for name in absent:
        assert not rules_for(value, name), name


def test_s390_compares_the_second_argument_of_clone() -> None:
    value = profile_to_linux_seccomp(DEFAULT_PROFILE, [], "s390x")
    assert [rule["args"][0]["index"] for rule in rules_for(value, "clone")] == [1]
    value = profile_to_linux_seccomp(DEFAULT_PROFILE, [], "x86_64")
    assert [rule["args"][0]["index"] for rule in rules_for(value, "clone")] == [0]


def test_default_architecture_is_this_machine() -> None:
    value = profile_to_linux_seccomp(DEFAULT_PROFILE, [])
    if MACHINE in ("x86_64", "aarch64"):
        assert value["architectures"][0] == f"SCMP_ARCH_{MACHINE.upper()}"


def test_min_kernel() -> None:
    major, minor = KERNEL
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["now"], "action": "SCMP_ACT_ALLOW",
         "includes": {"minKernel": f"{major}.{minor}"}},
        {"names": ["older"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "3.10"}},
        {"names": ["newer"], "action": "SCMP_ACT_ALLOW",
         "includes": {"minKernel": f"{major}.{minor + 1}"}},
        {"names": ["much_newer"], "action": "SCMP_ACT_ALLOW",
         "includes": {"minKernel": f"{major + 1}.0"}},
    ]}
    value = profile_to_linux_seccomp(profile, [])
    assert [rule["names"] for rule in value["syscalls"]] == [["now"], ["older"]]


def test_includes_need_every_cap_and_excludes_any() -> None:
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["both"], "action": "SCMP_ACT_ALLOW",
         "includes": {"caps": ["CAP_SYS_ADMIN", "CAP_NET_ADMIN"]}},
        {"names": ["unless_either"], "action": "SCMP_ACT_ALLOW",
         "excludes": {"caps": ["CAP_SYS_ADMIN", "CAP_NET_ADMIN"]}},
        {"name": "old_spelling", "action": "SCMP_ACT_LOG"},
        {"names": ["not_here"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["amd64"]}},
    ]}
    names = [rule["names"][0] for rule in
             profile_to_linux_seccomp(profile, ["CAP_SYS_ADMIN"], "x86_64")["syscalls"]]
    assert names == ["old_spelling"]
    names = [rule["names"][0] for rule in profile_to_linux_seccomp(
        profile, ["CAP_SYS_ADMIN", "NET_ADMIN"], "x86_64")["syscalls"]]
    assert names == ["both", "old_spelling"]
    names = [rule["names"][0] for rule in
             profile_to_linux_seccomp(profile, [], "aarch64")["syscalls"]]
    assert names == ["unless_either", "old_spelling", "not_here"]


def test_an_oci_value_passes_through() -> None:
    value = {"defaultAction": "SCMP_ACT_KILL_PROCESS", "architectures": ["SCMP_ARCH_X86_64"],
             "flags": ["SECCOMP_FILTER_FLAG_LOG"],
             "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                          {"names": ["ioctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 25,
                           "args": [{"index": 1, "value": 0x5412, "op": "SCMP_CMP_EQ"}]}]}
    converted = profile_to_linux_seccomp(value, [], "x86_64")
    assert converted == {**value, "syscalls": [
        value["syscalls"][0],
        {"names": ["ioctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 25,
         "args": [{"index": 1, "value": 0x5412, "op": "SCMP_CMP_EQ"}]}]}


# -- Checks -------------------------------------------------------------------------------


def _with_rule(rule: object) -> dict[str, Any]:
    value = profile_to_linux_seccomp(DEFAULT_PROFILE, [], "x86_64")
    value["syscalls"][3] = rule
    return value


@pytest.mark.parametrize(("value", "message"), [
    (_with_rule({"names": ["read"], "action": "SCMP_ACT_FOO"}),
     "linux.seccomp.syscalls[3].action: unknown action 'SCMP_ACT_FOO'"),
    (_with_rule({"names": ["read"], "action": "SCMP_ACT_NOTIFY"}),
     "linux.seccomp.syscalls[3].action: SCMP_ACT_NOTIFY is not supported"),
    (_with_rule({"names": ["read"]}), "linux.seccomp.syscalls[3].action: is missing"),
    (_with_rule({"names": [], "action": "SCMP_ACT_ALLOW"}),
     "linux.seccomp.syscalls[3].names: must name at least one system call"),
    (_with_rule({"names": ["read", 7], "action": "SCMP_ACT_ALLOW"}),
     "linux.seccomp.syscalls[3].names[1]: must be a string"),
    (_with_rule({"names": ["read"], "action": "SCMP_ACT_ALLOW", "errno": 1}),
     "linux.seccomp.syscalls[3].errno: unknown field"),
    (_with_rule({"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": "EPERM"}),
     "linux.seccomp.syscalls[3].errnoRet: must be a whole number"),
    (_with_rule({"names": ["read"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}),
     "linux.seccomp.syscalls[3].args[0].index: must be between 0 and 5, got 6"),
    (_with_rule({"names": ["read"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}]}),
     "linux.seccomp.syscalls[3].args[0].value: must be between 0 and"),
    (_with_rule({"names": ["read"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_MATCHES"}]}),
     "linux.seccomp.syscalls[3].args[0].op: unknown operator 'SCMP_CMP_MATCHES'"),
    (_with_rule({"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"value": 1}]}),
     "linux.seccomp.syscalls[3].args[0].index: is missing"),
    (_with_rule("read"), "linux.seccomp.syscalls[3]: must be an object"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_VAX"]},
     "linux.seccomp.architectures[0]: unknown architecture 'SCMP_ARCH_VAX'"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "flags": ["SECCOMP_FILTER_FLAG_NEW_LISTENER"]},
     "linux.seccomp.flags[0]: unknown flag 'SECCOMP_FILTER_FLAG_NEW_LISTENER'"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "listenerPath": "/run/x.sock"},
     "linux.seccomp.listenerPath: seccomp notification listeners are not supported"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 70000},
     "linux.seccomp.defaultErrnoRet: must be between 0 and 4095, got 70000"),
    ({"syscalls": []}, "linux.seccomp.defaultAction: is missing"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "archMap": []},
     "linux.seccomp.archMap: unknown field"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": {}},
     "linux.seccomp.syscalls: must be a list"),
    (["SCMP_ACT_ERRNO"], "linux.seccomp: must be an object"),
])
def test_check_names_the_field_in_one_line(value: Any, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        check_linux_seccomp(value)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("caps", [[], DOCKER_DEFAULT_CAPS, ["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"]])
@pytest.mark.parametrize("arch", ["x86_64", "aarch64", "s390x"])
def test_converted_default_profile_passes_the_check(caps: list[str], arch: str) -> None:
    check_linux_seccomp(profile_to_linux_seccomp(DEFAULT_PROFILE, caps, arch))


def write_profile(path: Path, value: object) -> str:
    path.write_text(json.dumps(value) if not isinstance(value, str) else value)
    return str(path)


@pytest.mark.parametrize(("content", "message"), [
    ("{", "not JSON"),
    ("[]", "must be an object"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": "read",
                                                       "action": "SCMP_ACT_ALLOW"}]},
     "syscalls[0].names: must be a list of strings"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"],
                                                       "action": "SCMP_ACT_FOO"}]},
     "syscalls[0].action: unknown action 'SCMP_ACT_FOO'"),
    ({"defaultAction": "SCMP_ACT_ALOW"}, "defaultAction: unknown action 'SCMP_ACT_ALOW'"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": True},
     "defaultErrnoRet: must be a whole number"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "archMap": [{"architecture": "SCMP_ARCH_Z80"}]},
     "archMap[0].architecture: unknown architecture 'SCMP_ARCH_Z80'"),
    ({"defaultAction": "SCMP_ACT_ERRNO",
      "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["x86"]}]},
     "archMap[0].subArchitectures[0]: unknown architecture 'x86'"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "five"}}]},
     "syscalls[0].includes.minKernel: must be a kernel version"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "5.8"}}]},
     "syscalls[0].excludes.minKernel: unknown field"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": "CAP_X"}}]},
     "syscalls[0].includes.caps: must be a list of strings"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ALLOW", "errnoret": 1}]},
     "syscalls[0].errnoret: unknown field"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrno": 1}, "defaultErrno: unknown field"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
      "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]},
     "archMap: give either architectures or archMap, not both"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "listenerPath": "/run/agent.sock"},
     "listenerPath: seccomp notification listeners are not supported"),
])
def test_read_profile_errors_name_the_file_and_field(tmp_path: Path, content: object,
                                                     message: str) -> None:
    path = write_profile(tmp_path / "profile.json", content)
    with pytest.raises(SpecError) as caught:
        read_profile(path)
    text = str(caught.value)
    assert text.startswith(f"seccomp profile {path}: "), text
    assert message in text, text
    assert "\n" not in text


def test_read_profile_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"^seccomp profile .*/nope\.json: No such file"):
        read_profile(str(tmp_path / "nope.json"))


def test_read_profile_of_dockers_shape(tmp_path: Path) -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "archMap": [{"architecture": "SCMP_ARCH_X86_64",
                     "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
        "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW", "comment": "", "args": [],
             "includes": {}, "excludes": {}},
            {"name": "write", "action": "SCMP_ACT_ALLOW"},
            {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW",
             "includes": {"minKernel": "4.8"}},
        ],
    }
    assert read_profile(write_profile(tmp_path / "p.json", profile)) == profile
    # pyctr's own default, written out, reads back the same
    path = write_profile(tmp_path / "default.json", DEFAULT_PROFILE)
    assert read_profile(path) == DEFAULT_PROFILE


# -- The compiled program -----------------------------------------------------------------

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
AUDIT_ARCH_AARCH64 = 0xC00000B7
X32_BIT = 0x40000000


def run_bpf(program: bytes, nr: int, arch: int, args: tuple[int, ...] = ()) -> int:
    """What the program returns for this call: a classic-BPF interpreter for the
    instructions libseccomp writes (loads from struct seccomp_data, AND, jumps, return)."""
    words = [*args, *[0] * (6 - len(args))]
    data = struct.pack("=IIQ6Q", nr, arch, 0, *words)
    accumulator, pc = 0, 0
    for _ in range(len(program) // 8 + 1):
        code, jump_true, jump_false, k = struct.unpack_from("=HBBI", program, pc * 8)
        pc += 1
        if code == 0x20:  # BPF_LD | BPF_W | BPF_ABS
            (accumulator,) = struct.unpack_from("=I", data, k)
        elif code == 0x54:  # BPF_ALU | BPF_AND | BPF_K
            accumulator &= k
        elif code == 0x05:  # BPF_JMP | BPF_JA
            pc += k
        elif code in (0x15, 0x25, 0x35, 0x45):  # JEQ, JGT, JGE, JSET with K
            taken = {0x15: accumulator == k, 0x25: accumulator > k, 0x35: accumulator >= k,
                     0x45: bool(accumulator & k)}[code]
            pc += jump_true if taken else jump_false
        elif code == 0x06:  # BPF_RET | BPF_K
            return k
        else:
            raise AssertionError(f"instruction 0x{code:x} at {pc - 1}")
    raise AssertionError("the program did not return")


@pytest.fixture(scope="module")
def default_program() -> bytes:
    value = profile_to_linux_seccomp(DEFAULT_PROFILE, DOCKER_DEFAULT_CAPS)
    return seccomp.compile_filter(value, cache_dir=None)


@requires_libseccomp
def test_program_fits_the_kernel(default_program: bytes) -> None:
    assert len(default_program) % 8 == 0
    assert 100 < len(default_program) // 8 < 4096


@requires_libseccomp
@x86_64_only
def test_program_on_x86_64(default_program: bytes) -> None:
    def run(nr: int, *args: int) -> int:
        return run_bpf(default_program, nr, AUDIT_ARCH_X86_64, args)

    assert run(39) == ALLOW  # getpid
    assert run(59) == ALLOW  # execve
    assert run(165) == EPERM_ACTION  # mount
    assert run(250) == EPERM_ACTION  # keyctl: known, refused
    assert run(101) == EPERM_ACTION  # ptrace
    assert run(56, 17) == ALLOW  # clone(SIGCHLD)
    assert run(56, 0x10000000 | 17) == EPERM_ACTION  # clone(CLONE_NEWUSER)
    assert run(435) == ENOSYS_ACTION  # clone3
    assert run(135, 0xFFFFFFFF) == ALLOW  # personality(query)
    assert run(135, 0x40000) == EPERM_ACTION  # personality(ADDR_NO_RANDOMIZE)
    assert run(41, 40) == EPERM_ACTION  # socket(AF_VSOCK)
    assert run(41, 38) == EPERM_ACTION  # socket(AF_ALG)
    assert run(41, 1) == ALLOW  # socket(AF_UNIX)
    assert run(41, 39) == ALLOW  # socket(AF_NFC)
    assert run(41, 44) == ALLOW  # socket(AF_XDP)
    # Every number above the highest libseccomp can name gets ENOSYS; holes below it, the
    # default action; past the table (1024), the default action too.
    assert all(run(nr) == ENOSYS_ACTION for nr in range(470, 1024))
    assert run(336) == EPERM_ACTION
    assert run(1024) == EPERM_ACTION
    # A call from an ABI the profile does not list: ENOSYS.
    assert run_bpf(default_program, 172, AUDIT_ARCH_AARCH64) == ENOSYS_ACTION


@requires_libseccomp
@x86_64_only
def test_program_on_x86_and_x32(default_program: bytes) -> None:
    def i386(nr: int, *args: int) -> int:
        return run_bpf(default_program, nr, AUDIT_ARCH_I386, args)

    def x32(nr: int, *args: int) -> int:
        return run_bpf(default_program, X32_BIT | nr, AUDIT_ARCH_X86_64, args)

    assert i386(20) == ALLOW  # getpid
    assert i386(21) == EPERM_ACTION  # mount
    assert i386(120, 17) == ALLOW  # clone(SIGCHLD)
    assert i386(120, 0x20000000 | 17) == EPERM_ACTION  # clone(CLONE_NEWPID)
    assert i386(102, 1) == ALLOW  # socketcall(SYS_SOCKET)
    assert i386(435) == ENOSYS_ACTION  # clone3
    assert x32(39) == ALLOW  # getpid
    assert x32(165) == EPERM_ACTION  # mount
    assert x32(56, 0x40000000) == EPERM_ACTION  # clone(CLONE_NEWNET)
    assert x32(435) == ENOSYS_ACTION  # clone3


@requires_libseccomp
def test_sys_admin_program_allows_mount_and_clone3() -> None:
    value = profile_to_linux_seccomp(DEFAULT_PROFILE, [*DOCKER_DEFAULT_CAPS, "CAP_SYS_ADMIN"])
    program = seccomp.compile_filter(value, cache_dir=None)
    if MACHINE == "x86_64":
        assert run_bpf(program, 165, AUDIT_ARCH_X86_64) == ALLOW
        assert run_bpf(program, 435, AUDIT_ARCH_X86_64) == ALLOW
        assert run_bpf(program, 56, AUDIT_ARCH_X86_64, (0x10000000,)) == ALLOW


@requires_libseccomp
def test_default_allow_gets_no_enosys_rules() -> None:
    value = {"defaultAction": "SCMP_ACT_ALLOW",
             "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 95}]}
    program = seccomp.compile_filter(value, cache_dir=None)
    assert len(program) // 8 < 20
    if MACHINE == "x86_64":
        assert run_bpf(program, 110, AUDIT_ARCH_X86_64) == ERRNO | 95
        assert run_bpf(program, 1000, AUDIT_ARCH_X86_64) == ALLOW


@requires_libseccomp
def test_compile_is_deterministic(default_program: bytes) -> None:
    value = profile_to_linux_seccomp(DEFAULT_PROFILE, DOCKER_DEFAULT_CAPS)
    assert seccomp.compile_filter(value, cache_dir=None) == default_program


@requires_libseccomp
def test_unknown_names_are_skipped() -> None:
    value = {"defaultAction": "SCMP_ACT_ERRNO",
             "syscalls": [{"names": ["getpid", "no_such_call_anywhere"],
                           "action": "SCMP_ACT_ALLOW"}]}
    assert seccomp.compile_filter(value, cache_dir=None)


@requires_libseccomp
@pytest.mark.parametrize(("value", "message"), [
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_GE"},
                  {"index": 0, "value": 9, "op": "SCMP_CMP_LE"}]}]},
     "linux.seccomp.syscalls[1].args[1]: argument 0 is compared twice in one rule"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_S390X"]},
     "linux.seccomp.architectures[0]: libseccomp cannot put SCMP_ARCH_S390X in one filter"),
])
def test_compile_errors_are_config_invalid(value: dict[str, Any], message: str) -> None:
    if MACHINE in ("s390x", "ppc64", "mips64") and "S390X" in str(value):
        pytest.skip("the mix of byte orders needs a little-endian machine")
    with pytest.raises(PyctrError) as caught:
        seccomp.compile_filter(value, cache_dir=None)
    assert caught.value.error == "config.invalid"
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_library_is_config_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seccomp, "LIBRARY", "libseccomp-pyctr-missing.so.9")
    monkeypatch.setattr(seccomp, "_library", None)
    with pytest.raises(PyctrError) as caught:
        seccomp.compile_filter({"defaultAction": "SCMP_ACT_ALLOW"}, cache_dir=None)
    assert caught.value.error == "config.invalid"
    assert "libseccomp-pyctr-missing.so.9" in str(caught.value)
    assert "seccomp=unconfined" in str(caught.value)


# -- The cache ----------------------------------------------------------------------------


@requires_libseccomp
def test_cache_is_written_private_and_read_back(tmp_path: Path, default_program: bytes) -> None:
    cache = tmp_path / "run" / "seccomp"
    value = profile_to_linux_seccomp(DEFAULT_PROFILE, DOCKER_DEFAULT_CAPS)
    assert seccomp.compile_filter(value, cache_dir=str(cache)) == default_program
    assert cache.stat().st_mode & 0o777 == 0o700
    (entry,) = cache.iterdir()
    assert entry.name.endswith(".bpf")
    assert entry.stat().st_mode & 0o777 == 0o600
    assert entry.read_bytes() == default_program
    # What is in the cache is what compile_filter returns: put another program there.
    allow_all = struct.pack("=HBBI", 0x06, 0, 0, ALLOW)
    entry.write_bytes(allow_all)
    assert seccomp.compile_filter(value, cache_dir=str(cache)) == allow_all
    # A key is the same for an equal value and differs with the value or the machine.
    version = seccomp.libseccomp_version()
    assert seccomp.cache_key(copy.deepcopy(value), version, MACHINE) == entry.name.removesuffix(
        ".bpf")
    assert seccomp.cache_key(value, version, "aarch64") != entry.name.removesuffix(".bpf")
    changed = {**value, "defaultErrnoRet": 13}
    assert seccomp.cache_key(changed, version, MACHINE) != entry.name.removesuffix(".bpf")


@requires_libseccomp
@pytest.mark.parametrize("damage", ["odd size", "empty", "too long", "group readable",
                                    "symlink"])
def test_a_damaged_cache_entry_is_compiled_again(tmp_path: Path, default_program: bytes,
                                                 damage: str) -> None:
    cache = tmp_path / "seccomp"
    value = profile_to_linux_seccomp(DEFAULT_PROFILE, DOCKER_DEFAULT_CAPS)
    seccomp.compile_filter(value, cache_dir=str(cache))
    (entry,) = cache.iterdir()
    if damage == "odd size":
        entry.write_bytes(default_program[:-3])
    elif damage == "empty":
        entry.write_bytes(b"")
    elif damage == "too long":
        entry.write_bytes(bytes(8 * 4097))
    elif damage == "group readable":
        entry.chmod(0o640)
    else:
        entry.unlink()
        (tmp_path / "elsewhere").write_bytes(struct.pack("=HBBI", 0x06, 0, 0, ALLOW))
        entry.symlink_to(tmp_path / "elsewhere")
    assert seccomp.compile_filter(value, cache_dir=str(cache)) == default_program
    # replaced whole, by a rename over the damaged entry; no temporary file left
    assert not entry.is_symlink()
    assert entry.stat().st_mode & 0o777 == 0o600
    assert entry.read_bytes() == default_program
    assert [path.name for path in cache.iterdir()] == [entry.name]


@requires_libseccomp
def test_a_cache_directory_others_can_write_is_not_used(tmp_path: Path,
                                                        default_program: bytes) -> None:
    cache = tmp_path / "seccomp"
    cache.mkdir(mode=0o777)
    cache.chmod(0o777)
    value = profile_to_linux_seccomp(DEFAULT_PROFILE, DOCKER_DEFAULT_CAPS)
    assert seccomp.compile_filter(value, cache_dir=str(cache)) == default_program
    assert not list(cache.iterdir())
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert seccomp.compile_filter(value, cache_dir=str(blocker / "x")) == default_program


# -- Installing, for real -----------------------------------------------------------------

# (number on x86_64, number on aarch64)
NUMBERS = {
    "getpid": (39, 172), "mount": (165, 40), "keyctl": (250, 219), "unshare": (272, 97),
    "clone": (56, 220), "clone3": (435, 435), "personality": (135, 92), "socket": (41, 198),
    "ptrace": (101, 117), "getppid": (110, 173), "uname": (63, 160),
}
requires_known_numbers = pytest.mark.skipif(MACHINE not in ("x86_64", "aarch64"),
                                            reason="system call numbers of x86_64, aarch64")
PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWUSER = 0x10000000
CLONE_NEWUTS = 0x04000000
SIGCHLD = 17
AF_UNIX, AF_ALG, AF_VSOCK, SOCK_STREAM, SOCK_SEQPACKET = 1, 38, 40, 1, 5

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def number(name: str) -> int:
    return NUMBERS[name][0 if MACHINE == "x86_64" else 1]


def call(nr: int, *args: int | bytes | None) -> tuple[int, int]:
    """(result, errno) of the raw system call ``nr``; ints pass as unsigned longs."""
    converted = [ctypes.c_ulong(arg) if isinstance(arg, int) else arg for arg in args]
    ctypes.set_errno(0)
    result = _libc.syscall(ctypes.c_long(nr), *converted)
    return result, (ctypes.get_errno() if result == -1 else 0)


def seccomp_mode() -> int:
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith("Seccomp:"):
                return int(line.split()[1])
    raise AssertionError("no Seccomp line in /proc/self/status")


def in_child(program: bytes | None, probes: Callable[[], dict[str, Any]], *,
             flags: int = 0, before: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run ``probes`` in a forked child after it installed ``program`` (None: no filter),
    and return what they found (``{"exception": ...}`` if something raised there); the child
    is reaped before this returns."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        status = 1
        try:
            os.close(read_end)
            if before is not None:
                before()
            if program is not None:
                assert _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
                install_filter(program, flags)
            report = probes()
            os.write(write_end, json.dumps(report).encode())
            status = 0
        except BaseException as exc:
            report = {"exception": f"{type(exc).__name__}: {exc}"}
            os.write(write_end, json.dumps(report).encode())
        finally:
            os._exit(status)
    os.close(write_end)
    chunks = []
    try:
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
    finally:
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
    report: dict[str, Any] = json.loads(b"".join(chunks) or b"{}")
    assert os.waitstatus_to_exitcode(status) == (1 if "exception" in report else 0), report
    return report


def clone_probe(flags: int) -> int:
    """errno of a fork-like clone(flags); a child it makes exits at once."""
    result, err = call(number("clone"), flags | SIGCHLD, 0, 0, 0, 0)
    if result == 0:  # pragma: no cover - the filter failed to refuse; leave quietly
        os._exit(0)
    if result > 0:
        os.waitpid(result, 0)
    return err


def common_probes(missing: str) -> Callable[[], dict[str, Any]]:
    def probes() -> dict[str, Any]:
        found: dict[str, Any] = {"seccomp": seccomp_mode()}
        result, err = call(number("getpid"))
        found["getpid"] = result == os.getpid() and err == 0
        found["mount"] = call(number("mount"), b"none", missing.encode(), b"tmpfs", 0,
                              None)[1]
        found["keyctl"] = call(number("keyctl"), 0, 0xFFFFFFFFFFFFFFFD, 0)[1]
        found["unshare_user"] = call(number("unshare"), CLONE_NEWUSER)[1]
        found["clone_newuts"] = clone_probe(CLONE_NEWUTS)
        found["clone3"] = call(number("clone3"), None, 0)[1]
        found["past_the_table"] = call(1000)[1]
        found["personality_query"] = call(number("personality"), 0xFFFFFFFF)[1]
        found["personality_other"] = call(number("personality"), 0x40000)[1]
        found["vsock"] = call(number("socket"), AF_VSOCK, SOCK_STREAM, 0)[1]
        found["alg"] = call(number("socket"), AF_ALG, SOCK_SEQPACKET, 0)[1]
        result, err = call(number("socket"), AF_UNIX, SOCK_STREAM, 0)
        if result >= 0:
            os.close(result)
        found["unix_socket"] = err
        found["ptrace"] = call(number("ptrace"), 0x7FFF, 0x7FFFFFFF, 0, 0)[1]
        thread = threading.Thread(target=lambda: None)
        thread.start()  # glibc tries clone3 first, and falls back to clone on ENOSYS
        thread.join()
        found["thread"] = True
        child = os.fork()
        if child == 0:  # pragma: no cover
            os._exit(7)
        found["fork"] = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
        return found

    return probes


@pytest.fixture
def missing(tmp_path: Path) -> str:
    return str(tmp_path / "not-there")


@requires_root
@requires_libseccomp
@requires_known_numbers
def test_default_filter_refuses_and_says_enosys(missing: str, default_program: bytes) -> None:
    found = in_child(default_program, common_probes(missing))
    assert found == {
        "seccomp": 2, "getpid": True,
        "mount": errno.EPERM, "keyctl": errno.EPERM, "unshare_user": errno.EPERM,
        "clone_newuts": errno.EPERM, "clone3": errno.ENOSYS, "past_the_table": errno.ENOSYS,
        "personality_query": 0, "personality_other": errno.EPERM, "vsock": errno.EPERM,
        "alg": errno.EPERM,
        "unix_socket": 0, "ptrace": errno.EPERM, "thread": True, "fork": 7,
    }


@requires_root
@requires_libseccomp
@requires_known_numbers
def test_capabilities_get_past_the_filter(missing: str) -> None:
    """With CAP_SYS_ADMIN and CAP_SYS_PTRACE the filter lets the calls through, and the
    kernel answers them (bogus arguments: nothing is mounted, traced or created)."""
    value = profile_to_linux_seccomp(DEFAULT_PROFILE, [*DOCKER_DEFAULT_CAPS, "CAP_SYS_ADMIN",
                                                       "CAP_SYS_PTRACE"])
    program = seccomp.compile_filter(value, cache_dir=None)

    def probes() -> dict[str, Any]:
        return {
            "mount": call(number("mount"), b"none", missing.encode(), b"tmpfs", 0, None)[1],
            "clone3": call(number("clone3"), None, 0)[1],
            "ptrace": call(number("ptrace"), 0x7FFF, 0x7FFFFFFF, 0, 0)[1],
            "keyctl": call(number("keyctl"), 0, 0xFFFFFFFFFFFFFFFD, 0)[1],
            "past_the_table": call(1000)[1],
        }

    assert in_child(program, probes) == {
        "mount": errno.ENOENT, "clone3": errno.EINVAL, "ptrace": errno.ESRCH,
        "keyctl": errno.EPERM, "past_the_table": errno.ENOSYS,
    }


@requires_root
@requires_known_numbers
def test_unconfined_means_no_filter(missing: str) -> None:
    found = in_child(None, lambda: {
        "seccomp": seccomp_mode(),
        "mount": call(number("mount"), b"none", missing.encode(), b"tmpfs", 0, None)[1],
        "past_the_table": call(1000)[1],
    })
    assert found == {"seccomp": 0, "mount": errno.ENOENT, "past_the_table": errno.ENOSYS}


@requires_root
@requires_libseccomp
@requires_known_numbers
def test_custom_profile_file(tmp_path: Path, missing: str) -> None:
    """A docker-format profile with its own default errno: known calls it does not allow get
    that errno, unknown ones ENOSYS, its own rules their own."""
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.EACCES,
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": []},
                    {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": []}],
        "syscalls": [
            {"names": ["write", "exit", "exit_group", "getpid", "brk", "mmap", "munmap",
                       "mremap", "madvise", "mprotect", "futex", "rt_sigprocmask",
                       "rt_sigaction", "close", "read", "getrandom"],
             "action": "SCMP_ACT_ALLOW"},
            {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EOPNOTSUPP},
            {"names": ["uname"], "action": "SCMP_ACT_ALLOW",
             "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["rseq"], "action": "SCMP_ACT_LOG", "includes": {"minKernel": "99.0"}},
        ],
    }
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    value = profile_to_linux_seccomp(read_profile(str(path)), DOCKER_DEFAULT_CAPS)
    check_linux_seccomp(value)
    assert value["architectures"] == [f"SCMP_ARCH_{MACHINE.upper()}"]
    program = seccomp.compile_filter(value, cache_dir=str(tmp_path / "cache"))

    def probes() -> dict[str, Any]:
        return {
            "getpid": call(number("getpid"))[1],
            "getppid": call(number("getppid"))[1],
            "uname": call(number("uname"), None)[1],
            "mount": call(number("mount"), b"none", missing.encode(), b"tmpfs", 0, None)[1],
            "past_the_table": call(1000)[1],
        }

    assert in_child(program, probes) == {
        "getpid": 0, "getppid": errno.EOPNOTSUPP, "uname": errno.EACCES,
        "mount": errno.EACCES, "past_the_table": errno.ENOSYS,
    }


@requires_root
@requires_libseccomp
@requires_known_numbers
def test_flags_and_the_prctl_fallback(default_program: bytes, missing: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    flags = filter_flags(["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"])
    assert flags == 1 | 4

    def probes() -> dict[str, Any]:
        return {"seccomp": seccomp_mode(),
                "mount": call(number("mount"), b"none", missing.encode(), b"t", 0, None)[1]}

    expected = {"seccomp": 2, "mount": errno.EPERM}
    assert in_child(default_program, probes, flags=flags) == expected

    def without_seccomp_syscall() -> None:  # as on a kernel before 3.17
        monkeypatch.setattr(linux_seccomp, "_SYS_SECCOMP", {})

    assert in_child(default_program, probes, before=without_seccomp_syscall) == expected
    found = in_child(default_program, probes, flags=flags, before=without_seccomp_syscall)
    assert "flags 0x5 need seccomp(2)" in found["exception"]


def test_filter_flags_and_bad_programs() -> None:
    assert filter_flags([]) == 0
    assert filter_flags(["SECCOMP_FILTER_FLAG_LOG"]) == 2
    with pytest.raises(SyscallError):
        filter_flags(["SECCOMP_FILTER_FLAG_NEW_LISTENER"])
    for program in (b"", bytes(7), bytes(8 * 4097)):
        with pytest.raises(SyscallError) as caught:
            install_filter(program)
        assert caught.value.errno == errno.EINVAL
    assert seccomp_mode() == 0


def test_compile_checks_the_value_first() -> None:
    with pytest.raises(PyctrError) as caught:
        seccomp.compile_filter({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]}, cache_dir=None)
    assert caught.value.error == "config.invalid"
    assert str(caught.value).startswith("linux.seccomp.syscalls[0].action: SCMP_ACT_NOTIFY")
