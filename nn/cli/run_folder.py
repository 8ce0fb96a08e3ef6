"""A run's output folder appears whole or not at all.

The job writes into a hidden temporary folder beside the destination; only when it has
finished is that folder renamed to its final name. A refused, failed or interrupted run
(an exception, Ctrl-C, SIGTERM, a closed pipe) removes the temporary folder and any parent
folders it created, so no empty or half-written run is left behind.
"""
import datetime
import errno
import os
import pathlib
import secrets
import shutil

from .arguments import UsageError

RUNS = pathlib.Path("runs")


def destination(out, prefix, where):
    """The folder a run will end in: `out`, or a new runs/<prefix>-<time>. Refuses a folder
    that already holds something; creates nothing. `where` ("bptt train") starts messages."""
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = RUNS / f"{prefix}-{stamp}"
        n = 1
        while out.exists():
            n += 1
            out = RUNS / f"{prefix}-{stamp}-{n}"
    out = pathlib.Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{where}: output folder {out} already exists and is not empty; choose another "
                         f"with --out (results are never written over an earlier run)")
    return out


class RunFolder:
    """`with RunFolder(dest, "bptt train") as tmp:` write into `tmp`; on a clean exit it
    becomes `dest`.

    `dest` comes from `destination()`, after every argument has been checked."""

    def __init__(self, dest, where):
        self.dest, self.where = pathlib.Path(dest), where
        self.tmp = None
        self._made = []  # parent folders this run created, innermost last

    def __enter__(self):
        parent = self.dest.parent
        missing = [p for p in [parent, *parent.parents] if not p.exists()]
        try:
            for folder in reversed(missing):
                self._made.append(folder)  # before mkdir: a signal in between still cleans
                folder.mkdir()
            # named before it is made, so a signal (SIGTERM raises) at any point leaves
            # nothing that _remove does not know of
            self.tmp = parent / f".{self.dest.name}.{secrets.token_hex(4)}.partial"
            self.tmp.mkdir()
        except OSError as exc:
            self._remove()
            raise UsageError(f"{self.where}: cannot write to output folder {self.dest}: "
                             f"{exc.strerror or exc}") from None
        except BaseException:  # Ctrl-C or SIGTERM while the folders were being made
            self._remove()
            raise
        return self.tmp

    def __exit__(self, kind, exc, tb):
        if kind is None:
            try:
                self._publish()
            except BaseException:
                self._remove()
                raise
        else:
            self._remove()
            if issubclass(kind, OSError) and not issubclass(kind, BrokenPipeError):
                # a full disk or a vanished folder while the results were written
                raise UsageError(f"{self.where}: cannot write the results to {self.dest}: "
                                 f"{exc.strerror or exc}; nothing was kept") from None
        return False

    def _publish(self):
        try:
            # over an empty folder (an --out made beforehand) rename succeeds; over one that
            # has since filled up it fails, and nothing of the earlier run is touched
            os.rename(self.tmp, self.dest)
        except OSError as exc:
            reason = ("it was created by someone else meanwhile"
                      if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) else exc.strerror or exc)
            raise UsageError(f"{self.where}: cannot move the results to {self.dest}: {reason}") from None
        self.tmp = None

    def _remove(self):
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        for folder in reversed(self._made):
            try:
                folder.rmdir()  # only while empty: another run may have written there since
            except FileNotFoundError:  # interrupted before it was made
                continue
            except OSError:
                break
        self._made = []
