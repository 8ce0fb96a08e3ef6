"""`bptt` as a process: Ctrl-C, SIGTERM and a reader that leaves early (`| head`) end a run
quietly, with the shell's exit codes, and leave no run folder behind."""
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LONG = ["train", "--steps", "100000", "--length", "6", "--hidden", "3", "--out", "run"]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _start(args, cwd, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # a shell's background job may ignore SIGINT; give the child the interactive default
    return subprocess.Popen([sys.executable, "-m", "nn", *args], cwd=cwd, env=env,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            **kwargs)


def _wait_for_the_run_to_start(proc, folder, timeout=60):
    """Until the hidden temporary folder of the run exists (training has begun)."""
    deadline = time.monotonic() + timeout
    while not any(p.name.startswith(".run.") for p in folder.iterdir()):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.05)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_a_run_exits_quietly_and_leaves_no_folder(sig, code, tmp_path):
    proc = _start(LONG, tmp_path, stdout=subprocess.DEVNULL)
    _wait_for_the_run_to_start(proc, tmp_path)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code
    assert "Traceback" not in err and err == ""
    assert list(tmp_path.iterdir()) == []


def test_a_reader_that_leaves_early_ends_the_run_and_leaves_no_folder(tmp_path):
    # `bptt train | head -1`: progress lines come every 200 steps of 2,000
    proc = _start(["train", "--steps", "2000", "--length", "6", "--hidden", "3", "--out", "run"],
                  tmp_path, stdout=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert first.startswith("task: adding")
    assert proc.returncode == 141
    assert "Traceback" not in err and err == ""
    assert list(tmp_path.iterdir()) == []


def _numpy_is_loading(pid):
    """True once numpy's compiled core is in the process: start-up has reached the import of
    the command line (the interpreter's own start-up, before any code of ours, is over).
    Only after the exec: until then the child is a copy of this process, numpy included,
    and a Ctrl-C there meets no handler of ours yet."""
    try:
        if b"-m\0bptt\0" not in pathlib.Path(f"/proc/{pid}/cmdline").read_bytes():
            return False
        return "numpy" in pathlib.Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not pathlib.Path("/proc/self/maps").exists(), reason="needs /proc")
@pytest.mark.parametrize("delay", [0.0, 0.05, 0.1, 0.2, 0.4])
def test_ctrl_c_during_start_up_exits_130_without_a_traceback(delay, tmp_path):
    """The `bptt` entry point (bptt.py) handles Ctrl-C before numpy, the engine and the
    subcommands are imported (a few tenths of a second): a Ctrl-C at any point of that
    import, or of the run right after, is exit code 130 and nothing on stderr."""
    import numpy
    import threadpoolctl
    import tqdm
    # -S: no site module, so that start-up is ours from its first milliseconds; the packages
    # the command needs come from PYTHONPATH instead
    found = {str(pathlib.Path(m.__file__).parents[1]) for m in (numpy, threadpoolctl, tqdm)}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *sorted(found)]))
    proc = subprocess.Popen([sys.executable, "-S", "-m", "bptt", *LONG], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not _numpy_is_loading(proc.pid):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "numpy was never imported"
        time.sleep(0.002)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, f"exit {proc.returncode}, stderr: {err!r}"
    assert err == ""
    assert list(tmp_path.iterdir()) == []


def test_the_console_script_is_the_entry_module_that_imports_nothing_heavy():
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["bptt"] == "bptt:main"
    assert project["tool"]["setuptools"]["py-modules"] == ["bptt"]
    code = ("import sys, bptt; heavy = {'numpy', 'nn', 'autograd_core'} & set(sys.modules); "
            "print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"
