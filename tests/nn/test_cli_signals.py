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
