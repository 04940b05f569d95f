"""An isolated podman for the tests: its own configuration, storage, locks and cgroup parent.

Everything podman keeps lives under one directory (``PodmanEnv(directory)``), pointed at by
two environment variables (``CONTAINERS_CONF``, ``CONTAINERS_STORAGE_CONF``), so neither the
machine's podman storage nor its configuration is read or touched. Measured with podman 4.3
(Debian 12), as root, on a cgroup v1/v2 hybrid host without CAP_SYS_RESOURCE:

- ``default_ulimits``: podman's defaults (nofile 1048576, nproc 4194304) cannot be set
  without CAP_SYS_RESOURCE, and every ``run`` fails.
- ``cgroup_manager = "cgroupfs"``, ``events_logger = "file"``: no systemd, no journald.
- ``lock_type = "file"``: locks in our tmp_dir instead of the machine-wide /dev/shm/libpod_lock.
- ``netns = "none"``: no netavark, bridge or firewall rules on the host.
- ``runtime_supports_json`` / ``runtime_supports_nocgroup`` name ``pyctr``: podman matches a
  runtime given by path by its file name.
- ``--cgroup-parent /pyctr-podman-PID`` on every run (containers.conf has no setting for it):
  conmon and the containers get cgroups of this session's own, removed in teardown, instead
  of podman's /libpod_parent.

Left on the machine, unavoidably: the empty /run/containers/networks (netavark's run
directory, hard-coded) and /var/lib/containers/cache (containers/image's blob-info cache,
written by ``import``). The runtime's own state (/run/runc for runc) stays the runtime's
default: podman would pass ``--runtime-flag root=...`` to its own calls, but not to the
``podman container cleanup`` conmon runs when a container exits, whose ``delete`` would then
miss the container.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

IMAGE = "localhost/pyctr-test:latest"
PODMAN = shutil.which("podman") or "/usr/bin/podman"
# A runtime whose file name is one of these gets `--log FILE --log-format json`.
JSON_RUNTIMES = ["crun", "runc", "kata", "krun", "pyctr"]
NOCGROUP_RUNTIMES = ["crun", "krun", "pyctr"]


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def storage_driver() -> str:
    """overlay where the kernel has it (fast: nothing is copied per container), else vfs;
    PYCTR_PODMAN_STORAGE_DRIVER overrides."""
    chosen = os.environ.get("PYCTR_PODMAN_STORAGE_DRIVER")
    if chosen:
        return chosen
    with open("/proc/filesystems") as file:
        return "overlay" if any(line.split()[-1] == "overlay" for line in file) else "vfs"


def cgroup_mount_points() -> list[str]:
    """Every cgroup (v1 and v2) hierarchy's mount point on this host."""
    points = []
    with open("/proc/self/mountinfo") as file:
        for line in file:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype in ("cgroup", "cgroup2"):
                points.append(fields[4])
    return points


def mounts_under(directory: Path) -> list[str]:
    prefix = str(directory).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as file:
        points = (line.split()[4] for line in file)
        return sorted(point for point in points if (point + "/").startswith(prefix))


def processes_naming(directory: Path) -> list[str]:
    """The processes whose command line names ``directory``: conmon, and the ``podman
    container cleanup`` it starts when a container exits, after podman itself has returned
    (which mounts the storage driver's home while it runs)."""
    needle = os.fsencode(str(directory))
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as file:
                command = file.read()
        except OSError:
            continue  # gone meanwhile
        if needle in command:
            words = command.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"process {entry}: {words[:100]}")
    return found


def write_call_logger(directory: Path, runtime: str, log: Path) -> str:
    """A wrapper around ``runtime`` with the same file name (podman matches runtimes by it)
    that appends each call's argv, environment keys, open descriptors and working directory
    to ``log``, then execs the runtime with everything unchanged."""
    directory.mkdir(parents=True, exist_ok=True)
    wrapper = directory / Path(runtime).name
    wrapper.write_text(f"""#!{sys.executable} -IS
import os, shlex, sys
fds = []
for fd in sorted(int(name) for name in os.listdir("/proc/self/fd")):
    try:
        fds.append(f"{{fd}}={{os.readlink(f'/proc/self/fd/{{fd}}')}}")
    except OSError:
        pass
with open("/proc/self/environ", "rb") as file:
    env = [entry for entry in file.read().split(b"\\0") if entry]
with open({str(log)!r}, "a") as file:
    file.write(f"ARGV: {{shlex.join(sys.argv[1:])}}\\n")
    file.write("  ENV: " + " ".join(sorted(e.split(b"=")[0].decode() for e in env)) + "\\n")
    file.write("  FDS: " + " ".join(fds) + f" cwd={{os.getcwd()}}\\n")
os.execve({runtime!r}, [{Path(runtime).name!r}, *sys.argv[1:]],
          dict(entry.split(b"=", 1) for entry in env))
""")
    wrapper.chmod(0o755)
    return str(wrapper)


class PodmanEnv:
    """podman confined to ``directory``; see the module's docstring."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.root = directory / "root"
        self.runroot = directory / "runroot"
        self.tmp = directory / "tmp"
        self.cgroup_parent = f"/pyctr-podman-{os.getpid()}"
        self.driver = storage_driver()
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "networks").mkdir(exist_ok=True)
        self.tmp.mkdir(exist_ok=True)
        self.containers_conf = directory / "containers.conf"
        self.containers_conf.write_text(f"""\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
netns = "none"
log_driver = "k8s-file"

[network]
network_config_dir = "{directory / 'networks'}"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
lock_type = "file"
tmp_dir = "{self.tmp}"
image_copy_tmp_dir = "{self.tmp}"
runtime_supports_json = {toml_list(JSON_RUNTIMES)}
runtime_supports_nocgroup = {toml_list(NOCGROUP_RUNTIMES)}
""")
        self.storage_conf = directory / "storage.conf"
        self.storage_conf.write_text(f"""\
[storage]
driver = "{self.driver}"
graphroot = "{self.root}"
runroot = "{self.runroot}"
""")
        self.env = {**os.environ, "CONTAINERS_CONF": str(self.containers_conf),
                    "CONTAINERS_STORAGE_CONF": str(self.storage_conf)}
        self.env.pop("CONTAINERS_REGISTRIES_CONF", None)

    def command(self, *args: str, runtime: str | None = None) -> list[str]:
        """The argv of ``podman [--runtime RUNTIME] ARGS``; run it with ``env``."""
        return [PODMAN, *(["--runtime", runtime] if runtime else []), *args]

    def podman(self, *args: str, runtime: str | None = None, timeout: float = 60,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
        """``podman [--runtime RUNTIME] ARGS`` in this environment; output captured as text."""
        return subprocess.run(self.command(*args, runtime=runtime), env=self.env, text=True,
                              capture_output=True, timeout=timeout, input=input)

    def run_args(self, *args: str) -> list[str]:
        """``run ARGS`` with the options every container of the tests gets."""
        return ["run", "--pull=never", "--cgroup-parent", self.cgroup_parent, *args]

    def with_runtime(self, runtime: str) -> Podman:
        return Podman(self, runtime)

    def import_image(self, rootfs: Path, name: str = IMAGE) -> str:
        """``tar -C ROOTFS -c . | podman import - NAME``; returns the image id."""
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        try:
            imported = subprocess.run([PODMAN, "import", "-", name], stdin=tar.stdout,
                                      env=self.env, capture_output=True, text=True,
                                      timeout=120)
        finally:
            tar.stdout.close()
            tar.wait()
        assert tar.returncode == 0, f"tar of {rootfs} failed"
        assert imported.returncode == 0, imported.stderr
        info = self.podman("info", "--format", "{{.Store.GraphRoot}}")
        assert info.stdout.strip() == str(self.root), (info.stdout, info.stderr)
        return imported.stdout.strip().splitlines()[-1]

    def own_cgroups(self) -> list[str]:
        """The cgroups below our parent, on every hierarchy, but conmon's (it stays)."""
        found = []
        for point in cgroup_mount_points():
            parent = Path(point + self.cgroup_parent)
            if parent.is_dir():
                found += [str(path) for path in parent.iterdir()
                          if path.is_dir() and path.name != "conmon"]
        return found

    def leftovers(self, settle: float = 5) -> list[str]:
        """What a test left behind: containers, conmon and its cleanup processes, mounts
        under the directory (the overlay driver's private bind mount of its home too: it
        goes with the last layer mounted, and comes back while a cleanup process runs),
        container cgroups. Waits up to ``settle`` seconds for them to go (conmon's cleanup
        runs after the container's exit)."""
        deadline = time.monotonic() + settle
        while True:
            found = []
            listed = self.podman("ps", "--all", "--quiet", "--no-trunc")
            found += [f"container {name}" for name in listed.stdout.split()]
            if listed.returncode != 0:
                found.append(f"podman ps failed: {listed.stderr}")
            found += processes_naming(self.directory)
            found += [f"mount {point}" for point in mounts_under(self.directory)]
            found += [f"cgroup {path}" for path in self.own_cgroups()]
            if not found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def teardown(self, runtime: str | None = None) -> None:
        """Remove every container, the image and the storage; then check that no mount is
        left under the directory, remove our cgroups and the directory."""
        problems = []
        if self.root.exists():
            # reset would stop each container with its stop timeout (10 s) first.
            removed = self.podman("rm", "--all", "--force", "--time", "0", runtime=runtime)
            if removed.returncode != 0:
                problems.append(f"podman rm --all: {removed.stderr}")
            reset = self.podman("system", "reset", "--force", runtime=runtime, timeout=120)
            if reset.returncode != 0:
                problems.append(f"podman system reset: {reset.stderr}")
        left = mounts_under(self.directory)
        for point in reversed(left):
            subprocess.run(["umount", "-l", point], check=False)
        if left:
            problems.append(f"mounts left under {self.directory}: {left}")
        for point in cgroup_mount_points():
            parent = point + self.cgroup_parent
            for path, _, _ in os.walk(parent, topdown=False):
                try:
                    os.rmdir(path)
                except OSError as error:
                    problems.append(f"cgroup {path}: {error}")
        shutil.rmtree(self.directory, ignore_errors=True)
        assert not problems, problems


class Podman:
    """A PodmanEnv's podman with one OCI runtime: ``podman --runtime RUNTIME ...``."""

    def __init__(self, env: PodmanEnv, runtime: str) -> None:
        self.env = env
        self.runtime = runtime

    def __call__(self, *args: str, timeout: float = 60,
                 input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.env.podman(*args, runtime=self.runtime, timeout=timeout, input=input)

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``podman run ARGS`` with the environment's run options (see run_args)."""
        return self(*self.env.run_args(*args), timeout=timeout)

    def command(self, *args: str) -> list[str]:
        return self.env.command(*args, runtime=self.runtime)

    def remove_all(self) -> None:
        """Remove every container at once (SIGKILL, no grace period)."""
        done = self("rm", "--all", "--force", "--time", "0")
        assert done.returncode == 0, done.stderr
