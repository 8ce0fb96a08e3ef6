"""Reading an .npz archive (what `np.savez` writes) that may be corrupt or hostile.

`read_npz(path)` returns the archive's arrays by name, or raises `ArchiveError` (a ValueError)
saying what is wrong. Unlike `np.load`, it checks the archive's structure before it reads any
array, so that a crafted file cannot make it allocate more memory than the file backs:

- only a regular file is opened (a FIFO or a device would block or never end);
- member names are unique and end in ".npy"; members are stored or deflated, not encrypted;
- a stored member lies inside the file, and a deflated one declares no more than deflate can
  expand its compressed bytes to (about 1032 to 1);
- each .npy header (version 1.0 or 2.0, parsed by numpy's own header reader) declares a
  numeric dtype (bool, integer or floating: no strings, complex numbers, objects or records)
  and a shape whose size in bytes is exactly what the member holds.

zipfile checks each member's CRC-32 as its last byte is read.
"""
import math
import os
import stat
import zipfile
from collections import Counter, OrderedDict

import numpy as np

__all__ = ["read_npz", "ArchiveError", "NUMERIC_KINDS"]

NUMERIC_KINDS = "biuf"  # numpy dtype kinds a checkpoint may hold
_DEFLATE_MAX_RATIO = 1032  # the most deflate can expand its input
_NPY_MAGIC = b"\x93NUMPY"


class ArchiveError(ValueError):
    """A file that is not a well-formed .npz archive of numeric arrays."""


def describe_dtype(dtype):
    """What a dtype holds, in words, for refusals."""
    kinds = {"b": "booleans", "i": "integers", "u": "unsigned integers",
             "f": "floating values", "c": "complex numbers", "U": "strings",
             "S": "byte strings", "O": "pickled Python objects", "V": "records or raw bytes",
             "M": "dates", "m": "time spans"}
    return f"{kinds.get(dtype.kind, 'values')} (dtype {dtype})"


def _open_regular(path):
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise ArchiveError(f"it is {kind}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_member(info, file_size):
    name = info.filename
    if not name.endswith(".npy"):
        raise ArchiveError(f"the entry {name!r} is not a numpy array (is this an .npz "
                           f"archive?)")
    if info.flag_bits & 0x1:
        raise ArchiveError(f"the entry {name!r} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ArchiveError(f"the entry {name!r} uses zip compression method "
                           f"{info.compress_type}; only stored and deflated entries are read")
    if info.header_offset + info.compress_size > file_size:
        raise ArchiveError(f"the entry {name!r} claims {info.compress_size} bytes, beyond the "
                           f"end of the {file_size}-byte file")
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        raise ArchiveError(f"the stored entry {name!r} claims {info.file_size} bytes but "
                           f"holds {info.compress_size}")
    if info.file_size > _DEFLATE_MAX_RATIO * info.compress_size + 1024:
        raise ArchiveError(f"the entry {name!r} claims {info.file_size} bytes, more than its "
                           f"{info.compress_size} compressed bytes can hold")


def _read_header(member, name):
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(member)
    else:  # 3.0 only differs for record dtypes with non-latin-1 field names
        raise ArchiveError(f"the entry {name!r} has .npy format version {version}; "
                           f"1.0 and 2.0 are read")
    if dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype:
        raise ArchiveError(f"the entry {name!r} holds {describe_dtype(dtype)}; a checkpoint "
                           f"holds only numbers (bool, integer or floating), no pickles")
    if any(n < 0 for n in shape):
        raise ArchiveError(f"the entry {name!r} declares the shape {shape}")
    return shape, fortran_order, dtype


def _read_member(zf, info):
    name = info.filename
    with zf.open(info) as member:
        shape, fortran_order, dtype = _read_header(member, name)
        # Python ints: no overflow, whatever the header declares
        nbytes = math.prod(shape) * dtype.itemsize
        held = info.file_size - member.tell()
        if nbytes != held:
            raise ArchiveError(f"the entry {name!r} declares an array of shape {shape} and "
                               f"dtype {dtype} ({nbytes} bytes), but holds {held} bytes")
        data = member.read(nbytes)
        if len(data) != nbytes or member.read(1):  # the read to the end checks the CRC
            raise ArchiveError(f"the entry {name!r} does not hold the {nbytes} bytes it "
                               f"declares")
    arr = np.frombuffer(bytearray(data), dtype=dtype)  # a bytearray: the result is writable
    return arr.reshape(shape, order="F" if fortran_order else "C")


def read_npz(path):
    """The arrays of the .npz archive at `path` (an OrderedDict name -> ndarray, in archive
    order; the name is the member's name without ".npy"). Raises ArchiveError for a file
    that is not a well-formed archive of numeric arrays; zipfile's own errors
    (zipfile.BadZipFile, ...) and OSError pass through."""
    with _open_regular(path) as f:
        file_size = os.fstat(f.fileno()).st_size
        if f.read(len(_NPY_MAGIC)) == _NPY_MAGIC:
            raise ArchiveError("it is a single .npy array, not an .npz archive of named "
                               "arrays")
        f.seek(0)
        with zipfile.ZipFile(f) as zf:
            infos = zf.infolist()
            repeated = sorted(n for n, c in Counter(i.filename for i in infos).items() if c > 1)
            if repeated:
                raise ArchiveError(f"the entry {repeated[0]!r} appears more than once (which "
                                   f"one would be meant?)")
            for info in infos:
                _check_member(info, file_size)
            return OrderedDict((info.filename[:-len(".npy")], _read_member(zf, info))
                               for info in infos)
