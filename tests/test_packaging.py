"""pyctr installs under its own namespace: next to PyPI's ``supervisor`` (supervisord) in one
environment, both import and both command lines work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO


@pytest.fixture(scope="module")
def shared_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("pkg") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    # supervisord first, then pyctr over it: pyctr must not replace any of its files.
    subprocess.run([*pip, "supervisor"], check=True)
    subprocess.run([*pip, str(REPO)], check=True)
    return venv


def test_pyctr_files_all_live_under_pyctr(shared_venv: Path) -> None:
    listing = subprocess.run([str(shared_venv / "bin" / "python"), "-m", "pip", "show", "-f",
                              "pyctr"], capture_output=True, text=True, check=True).stdout
    files = [line.strip() for line in listing.split("Files:", 1)[1].splitlines() if line.strip()]
    top = {path.split("/", 1)[0] for path in files}
    assert top <= {"pyctr", "pyctr-0.1.0.dist-info", "..", "__editable__.pyctr-0.1.0.pth"}, top
    assert "pyctr" in top


def test_both_import_side_by_side(shared_venv: Path) -> None:
    code = (
        "import supervisor, supervisor.supervisord, supervisor.options\n"
        "import pyctr.supervisor, pyctr.init, pyctr.protocol\n"
        "assert 'site-packages/supervisor' in supervisor.__file__, supervisor.__file__\n"
        "assert hasattr(supervisor.supervisord, 'Supervisor')\n"
        "assert hasattr(pyctr.supervisor, 'ContainerConfig')\n"
        "print('ok')\n"
    )
    # Not from the repository root: there, `python -c` puts the checkout's own supervisor/
    # folder first on sys.path, which shadows any installed `supervisor` package.
    out = subprocess.run([str(shared_venv / "bin" / "python"), "-c", code],
                         capture_output=True, text=True, cwd=shared_venv)
    assert out.stdout == "ok\n", out.stderr


def test_both_command_lines_work(shared_venv: Path) -> None:
    ours = subprocess.run([str(shared_venv / "bin" / "pyctr-supervise"), "--version"],
                          capture_output=True, text=True)
    assert ours.returncode == 0 and ours.stdout.startswith("pyctr-supervise")
    theirs = subprocess.run([str(shared_venv / "bin" / "supervisord"), "--version"],
                            capture_output=True, text=True)
    assert theirs.returncode == 0 and theirs.stdout.strip()[0].isdigit()


@pytest.mark.skipif(sys.platform != "linux", reason="containers are Linux-only")
def test_installed_copy_runs_a_container(shared_venv: Path, rootfs: Path) -> None:
    out = subprocess.run([str(shared_venv / "bin" / "pyctr-supervise"), "--log-level", "error",
                          str(rootfs), "/bin/echo", "from-installed-copy"],
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, "from-installed-copy\n"), out.stderr


@pytest.fixture(scope="module")
def made_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make install` into a temporary venv and prefix, as a user would run it (into
    /opt/pyctr and /usr/local)."""
    root = tmp_path_factory.mktemp("install")
    (root / "bin").mkdir()
    made = subprocess.run(["make", "-s", "install", f"SYSTEM_VENV={root / 'venv'}",
                           f"PREFIX={root}"], cwd=REPO, capture_output=True, text=True)
    assert made.returncode == 0, made.stdout + made.stderr
    return root


@pytest.mark.skipif(sys.platform != "linux", reason="containers are Linux-only")
def test_make_install_writes_a_script_without_site_that_runs_a_container(
        made_install: Path, rootfs: Path) -> None:
    script = made_install / "venv" / "bin" / "pyctr-supervise"
    assert script.read_text().startswith(f"#!{made_install / 'venv' / 'bin' / 'python'} -IS\n")
    assert (made_install / "bin" / "pyctr-supervise").resolve() == script
    out = subprocess.run([str(made_install / "bin" / "pyctr-supervise"), "--log-level", "error",
                          str(rootfs), "/bin/echo", "from-make-install"],
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, "from-make-install\n"), out.stderr
