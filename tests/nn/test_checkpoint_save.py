"""nn.save: only regular files are replaced, a full disk is one clear error that leaves the old
checkpoint, and the temporary files of saves killed mid-write are removed by the next save."""
import errno
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from nn import atomic_file
from nn.checkpoint import CheckpointError, CheckpointWriteError, load, save

OLD = {"w": np.arange(4.0), "b": np.array([7.0])}
NEW = {"w": np.ones(4), "b": np.array([-1.0])}


@pytest.fixture
def old_checkpoint(tmp_path):
    path = tmp_path / "ckpt.npz"
    save(OLD, path)
    return path, path.read_bytes()


def assert_old_intact(path, before):
    assert path.read_bytes() == before
    np.testing.assert_array_equal(load(path)["w"], OLD["w"])


def temp_files(folder):
    return sorted(n for n in os.listdir(folder) if ".tmp-" in n)


# ---- destinations that are not regular files -----------------------------------------------

def test_a_symbolic_link_is_refused_and_left_alone(tmp_path, old_checkpoint):
    target, before = old_checkpoint
    link = tmp_path / "link.npz"
    os.symlink(target, link)
    with pytest.raises(CheckpointError, match=r"link\.npz' cannot be saved: it is a symbolic "
                                              r"link \(to '.*ckpt\.npz'; write to the target's "
                                              r"own path instead\)"):
        save(NEW, link)
    assert os.readlink(link) == str(target) and link.is_symlink()
    assert_old_intact(target, before)
    dangling = tmp_path / "dangling.npz"
    os.symlink(tmp_path / "nowhere.npz", dangling)
    with pytest.raises(CheckpointError, match="it is a symbolic link"):
        save(NEW, dangling)
    assert not (tmp_path / "nowhere.npz").exists()
    assert temp_files(tmp_path) == []


def test_a_directory_or_fifo_is_refused(tmp_path):
    folder = tmp_path / "folder.npz"
    folder.mkdir()
    (folder / "inside").write_text("kept")
    with pytest.raises(CheckpointError, match=r"folder\.npz' cannot be saved: it is a "
                                              r"directory, and only a regular file is replaced"):
        save(NEW, folder)
    assert (folder / "inside").read_text() == "kept"
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match="it is a FIFO"):
        save(NEW, fifo)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert temp_files(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="making a device node needs root")
def test_a_device_node_is_refused_even_for_root(tmp_path):
    dev = tmp_path / "null.npz"
    os.mknod(dev, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # the numbers of /dev/null
    with pytest.raises(CheckpointError, match="it is a character device"):
        save(NEW, dev)
    st = os.lstat(dev)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)


def test_a_replaced_file_keeps_its_permissions(tmp_path, old_checkpoint):
    path, _ = old_checkpoint
    os.chmod(path, 0o640)
    save(NEW, path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    np.testing.assert_array_equal(load(path)["w"], NEW["w"])


# ---- a full disk ----------------------------------------------------------------------------

class FullDisk(io.FileIO):
    """A file on a disk with `room` bytes left: the write that would pass it fails."""
    room = 0

    def write(self, data):
        if self.tell() + len(memoryview(data).cast("B")) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


@pytest.mark.parametrize("room", ["none", "half", "all but the zip's directory"])
def test_a_full_disk_is_one_clear_error(tmp_path, monkeypatch, old_checkpoint, room):
    path, before = old_checkpoint
    size = len(before)
    FullDisk.room = {"none": 0, "half": size // 2, "all but the zip's directory": size - 60}[room]
    real_fdopen = os.fdopen
    monkeypatch.setattr(atomic_file.os, "fdopen",
                        lambda fd, mode="r", *a, **k: FullDisk(fd, "wb") if mode == "wb"
                        else real_fdopen(fd, mode, *a, **k))
    with pytest.raises(CheckpointWriteError) as info:
        save(NEW, path)
    monkeypatch.undo()
    err = info.value
    assert str(err) == (f"checkpoint {str(path)!r} cannot be saved: No space left on device; "
                        f"the previous file is unchanged")
    assert err.errno == errno.ENOSPC and isinstance(err, OSError)
    assert err.__cause__ is None and err.__suppress_context__  # one error, not a chain
    assert temp_files(path.parent) == []
    assert_old_intact(path, before)


MOUNT_SCRIPT = textwrap.dedent("""
    import json, os, subprocess, sys
    import numpy as np
    from nn.checkpoint import CheckpointWriteError, load, save
    disk = sys.argv[1]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", disk], check=True)
    path = os.path.join(disk, "ckpt.npz")
    save({"w": np.arange(4.0)}, path)
    before = open(path, "rb").read()
    try:
        save({"w": np.zeros(100_000)}, path)  # 800 kB on a 128 kB disk
        result = {"error": None}
    except CheckpointWriteError as e:
        result = {"error": str(e), "errno": e.errno}
    result["files"] = sorted(os.listdir(disk))
    result["intact"] = open(path, "rb").read() == before
    result["w"] = load(path)["w"].tolist()
    print(json.dumps(result))
""")


def test_a_full_tmpfs_is_one_clear_error(tmp_path):
    # a real full file system, mounted in a private mount namespace where that is allowed
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a private tmpfs here (unshare -rm)")
    disk = tmp_path / "disk"
    disk.mkdir()
    run = subprocess.run(["unshare", "-rm", sys.executable, "-c", MOUNT_SCRIPT, str(disk)],
                         capture_output=True, text=True, timeout=120)
    if run.returncode != 0 and "mount" in run.stderr and "ckpt" not in run.stderr:
        pytest.skip(f"tmpfs cannot be mounted here: {run.stderr.strip()[-200:]}")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["errno"] == errno.ENOSPC
    assert result["error"].endswith("cannot be saved: No space left on device; the previous "
                                    "file is unchanged")
    assert result["files"] == ["ckpt.npz"] and result["intact"]
    assert result["w"] == [0.0, 1.0, 2.0, 3.0]


# ---- saves killed mid-write --------------------------------------------------------------

KILLED_SAVE = textwrap.dedent("""
    import sys, time
    import numpy as np
    from nn import checkpoint
    real = np.lib.format.write_array
    def stall_after_the_first(fp, array, *args, **kwargs):
        real(fp, array, *args, **kwargs)
        print("half-written", flush=True)
        time.sleep(120)  # until killed
    np.lib.format.write_array = stall_after_the_first
    checkpoint.save({"w": np.zeros(200_000), "b": np.ones(3)}, sys.argv[1])
""")


def killed_mid_write(path):
    """Run a save of `path` in a subprocess and SIGKILL it half-way; returns its pid."""
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "half-written\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    return proc.pid


def stale_pid(name, path):
    return int(atomic_file.temp_name_pattern(path).match(name).group(1))


def test_temporary_files_of_killed_saves_are_removed_by_the_next_save(tmp_path,
                                                                     old_checkpoint):
    path, before = old_checkpoint
    first = killed_mid_write(path)
    left = temp_files(tmp_path)
    assert [stale_pid(n, path) for n in left] == [first]
    assert os.path.getsize(tmp_path / left[0]) > 1_000_000  # w was written, then the kill
    # the next save, killed too, starts by removing the first one's file: kills never pile up
    second = killed_mid_write(path)
    assert [stale_pid(n, path) for n in temp_files(tmp_path)] == [second]
    assert_old_intact(path, before)  # the killed saves never touched it
    # what is not a dead save's temporary file of this path stays: a live process's (another
    # process, or this one), another checkpoint's, look-alikes
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stale = [f".ckpt.npz.tmp-{first}-0123abcd", f".ckpt.npz.tmp-{second}-89abcdef"]
    kept = [f".ckpt.npz.tmp-{live.pid}-0123abcd", f".ckpt.npz.tmp-{os.getpid()}-0123abcd",
            f".other.npz.tmp-{first}-0123abcd", f".ckpt.npz.tmp-{first}-xyz",
            f"ckpt.npz.tmp-{first}-0123abcd"]
    try:
        for name in stale + kept:
            (tmp_path / name).write_bytes(b"left behind")
        save(NEW, path)
        assert sorted(os.listdir(tmp_path)) == sorted(["ckpt.npz", *kept])
    finally:
        live.kill()
        live.wait()
    np.testing.assert_array_equal(load(path)["w"], NEW["w"])


def test_a_killed_first_save_is_cleaned_by_the_next(tmp_path):
    path = tmp_path / "new.npz"
    killed_mid_write(path)
    assert not path.exists() and len(temp_files(tmp_path)) == 1
    save(NEW, path)
    assert os.listdir(tmp_path) == ["new.npz"]
    np.testing.assert_array_equal(load(path)["b"], [-1.0])
