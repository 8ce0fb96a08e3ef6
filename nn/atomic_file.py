"""Replacing a file atomically: readers see the old file or the new one, never half of one.

`write_atomically(path, write)` calls `write(f)` on a temporary file in the destination's
folder, flushes and fsyncs it, then renames it over `path` with `os.replace`. On any failure
(an OSError, Ctrl-C) the temporary file is removed and `path` is left as it was.

The temporary file is named `.<name>.tmp-<pid>-<8 hex digits>`, so that a later write to the
same path can recognise the ones that a killed process (SIGKILL, power loss) left behind, and
remove those whose process no longer runs on this machine. Only regular files are replaced: a
symbolic link, a directory, a device, a FIFO or a socket at `path` is refused (`os.replace`
would silently swap a link or a device node for a plain file). The check is made just before
the temporary file is written; a path turned into a link while it is written is replaced.
"""
import errno
import os
import re
import secrets
import stat

__all__ = ["write_atomically", "DestinationError", "remove_stale_temps", "temp_name_pattern"]


class DestinationError(ValueError):
    """The path exists and is not a regular file."""


def _file_kind(mode):
    for test, kind in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def _existing_mode(path):
    """The permission bits of the regular file at `path`, None when there is none; raises
    DestinationError for anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISREG(st.st_mode):
        return stat.S_IMODE(st.st_mode)
    kind = _file_kind(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        kind += f" (to {os.readlink(path)!r}; write to the target's own path instead)"
    raise DestinationError(f"it is {kind}, and only a regular file is replaced")


def _temp_prefix(path):
    # at most 100 bytes of the name, so that the temporary name stays within NAME_MAX
    base = os.fsdecode(os.fsencode(os.path.basename(path))[:100])
    return f".{base}.tmp-"


def temp_name_pattern(path):
    """A regex matching the temporary files of writes to `path`; group 1 is the pid."""
    return re.compile(re.escape(_temp_prefix(path)) + r"(\d+)-[0-9a-f]{8}\Z")


def _process_is_gone(pid):
    if os.name != "posix" or pid == os.getpid():
        return False  # (on Windows, os.kill(pid, 0) would send CTRL_C_EVENT)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it runs, as another user
        return False
    return False


def remove_stale_temps(path):
    """Remove the temporary files that writes to `path` by processes that no longer run
    left behind; returns their names. (A pid reused since by a live process keeps its file
    until that process ends.)"""
    folder = os.path.dirname(os.path.abspath(path))
    pattern = temp_name_pattern(path)
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = pattern.match(name)
        if match and _process_is_gone(int(match.group(1))):
            try:
                os.unlink(os.path.join(folder, name))
                removed.append(name)
            except OSError:
                pass  # removed by another writer meanwhile, or not ours to remove
    return removed


def _fsync_folder(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # not supported everywhere (Windows, some file systems)
    finally:
        os.close(fd)


def write_atomically(path, write):
    """Write a new file at `path` by calling `write(f)` on a binary file object, atomically
    (see the module's docstring). Raises FileNotFoundError when the folder does not exist,
    DestinationError when `path` is not a regular file, and the OSError of a failed write
    (disk full, ...) once the temporary file is gone."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, "the folder of the file does not exist", folder)
    old_mode = _existing_mode(path)
    remove_stale_temps(path)
    prefix = os.path.join(folder, _temp_prefix(path))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = f"{prefix}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            fd = os.open(tmp, flags, 0o666)  # the umask applies, as for a plain open()
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            if old_mode is not None:
                os.chmod(tmp, old_mode)  # a replaced file keeps its permissions
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_folder(folder)
