"""Checkpoints: a model's parameters (and an optimizer's state, when asked) in one `.npz` file.

    nn.checkpoint.save(model, "run.npz", optimizer=opt)
    state = nn.checkpoint.load("run.npz", module=model, optimizer=opt)

The file is an ordinary numpy archive (the format `np.savez` writes) holding only numeric
arrays, so `np.load(path, allow_pickle=False)` reads it: one array per parameter under its
dotted name, and the optimizer's state under keys starting with `__optimizer__/`
(`__optimizer__/state/<index>/<name>`, `__optimizer__/param_groups/<group>/<hyperparameter>`;
tuples such as Adam's betas become 1-d arrays).

Writes are atomic: the archive is written to a temporary file in the destination folder,
flushed and fsync'ed, then renamed over the destination with `os.replace`; on any failure the
temporary file is removed and an existing checkpoint is left as it was.
"""
import errno
import os
import secrets
import zipfile
import zlib
from collections import OrderedDict

import numpy as np

from autograd_core import Tensor

__all__ = ["save", "load", "CheckpointError", "CheckpointKeyError", "OPTIMIZER_PREFIX"]

OPTIMIZER_PREFIX = "__optimizer__/"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or that does not fit the model or optimizer.
    The message names the file and, where there is one, the parameter."""


class CheckpointKeyError(CheckpointError, KeyError):
    """Missing or unexpected parameter names (also a KeyError, as load_state_dict raises)."""

    __str__ = ValueError.__str__  # KeyError would quote the whole message


# ---- saving -------------------------------------------------------------------------------

def _as_array(value, key, where):
    if isinstance(value, Tensor):
        value = value.numpy()
    elif hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        value = value.detach().numpy()
    arr = np.asarray(value)
    if arr.dtype.kind not in "biufc":
        raise CheckpointError(f"{where}: {key!r} has dtype {arr.dtype}; a checkpoint holds "
                              f"only numeric arrays (no pickled objects)")
    return arr


def _model_arrays(obj, where):
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        state = obj.state_dict()
    elif hasattr(obj, "items"):
        state = obj
    else:
        raise TypeError(f"{where}: expected a Module or a state dict (name -> array), got "
                        f"{type(obj).__name__}")
    arrays = OrderedDict()
    for key, value in state.items():
        if not isinstance(key, str) or not key:
            raise CheckpointError(f"{where}: state dict keys must be non-empty strings, got "
                                  f"{key!r}")
        if key.startswith(OPTIMIZER_PREFIX):
            raise CheckpointError(f"{where}: the name {key!r} is reserved for optimizer state")
        arrays[key] = _as_array(value, key, where)
    return arrays


def _optimizer_arrays(optimizer, where):
    sd = optimizer.state_dict()
    arrays = OrderedDict()
    for g, group in enumerate(sd["param_groups"]):
        for name, value in group.items():
            key = f"{OPTIMIZER_PREFIX}param_groups/{g}/{name}"
            if name == "params":
                arrays[key] = np.asarray(list(value), dtype=np.int64)
            else:
                if value is None or isinstance(value, str):
                    raise CheckpointError(f"{where}: optimizer hyperparameter {name!r} is "
                                          f"{value!r}; only numbers and tuples of numbers "
                                          f"can be saved")
                arrays[key] = _as_array(value, name, where)
    for index, entry in sd["state"].items():
        for name, value in entry.items():
            arrays[f"{OPTIMIZER_PREFIX}state/{int(index)}/{name}"] = _as_array(value, name, where)
    return arrays


def _write_npz(f, arrays):
    # What np.savez does, without passing names as keyword arguments (a parameter may be
    # called "file") and with allow_pickle=False.
    with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, arr in arrays.items():
            with zf.open(key + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, arr, allow_pickle=False)


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


def save(module_or_state_dict, path, optimizer=None):
    """Write a Module's parameters (or a state dict name -> array) to `path` as an .npz
    archive, with `optimizer`'s state and hyperparameters when given. Atomic: a crash or an
    error leaves any previous file at `path` untouched. Returns `path` (the name is used as
    given: no ".npz" is appended)."""
    path = os.fspath(path)
    where = f"checkpoint {path!r}"
    arrays = _model_arrays(module_or_state_dict, where)
    if optimizer is not None:
        arrays.update(_optimizer_arrays(optimizer, where))
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, "the folder of the checkpoint does not exist",
                                folder)
    base = os.path.basename(path)[:100]
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(folder, f".{base}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)  # the umask applies, as for a plain open()
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            _write_npz(f, arrays)
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
    return path


# ---- loading ------------------------------------------------------------------------------

_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError,
                KeyError, IndexError, zlib.error, NotImplementedError)


def _read(path):
    """All arrays of the archive at `path`, in file order."""
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, "no such checkpoint file", path)
    where = f"checkpoint {path!r}"
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{where} is a single .npy array, not an .npz archive of "
                                  f"named arrays")
        with data:
            arrays = OrderedDict((key, data[key]) for key in data.files)
    except CheckpointError:
        raise
    except _READ_ERRORS as e:
        raise CheckpointError(f"{where} cannot be read: the file is corrupt, truncated or not "
                              f"a checkpoint ({type(e).__name__}: {e})") from e
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray):
            raise CheckpointError(f"{where}: the entry {key!r} is not a numpy array (is this "
                                  f"an .npz checkpoint?)")
    return arrays


def _optimizer_state(arrays, where):
    """The optimizer state dict kept under OPTIMIZER_PREFIX, or None when there is none."""
    groups, state = {}, {}
    for key, value in arrays.items():
        if not key.startswith(OPTIMIZER_PREFIX):
            continue
        parts = key[len(OPTIMIZER_PREFIX):].split("/")
        try:
            if len(parts) != 3 or parts[0] not in ("param_groups", "state"):
                raise ValueError
            index = int(parts[1])
        except ValueError:
            raise CheckpointError(f"{where}: unexpected optimizer entry {key!r}") from None
        table = groups if parts[0] == "param_groups" else state
        table.setdefault(index, {})[parts[2]] = value
    if not groups and not state:
        return None
    if sorted(groups) != list(range(len(groups))):
        raise CheckpointError(f"{where}: the optimizer's parameter groups are numbered "
                              f"{sorted(groups)}, not 0..{len(groups) - 1}")
    param_groups = []
    for g in range(len(groups)):
        group = dict(groups[g])
        if "params" not in group:
            raise CheckpointError(f"{where}: optimizer parameter group {g} lacks its 'params'")
        group["params"] = [int(i) for i in np.asarray(group["params"]).reshape(-1)]
        param_groups.append(group)
    return {"state": state, "param_groups": param_groups}


def _check_fits(module, state, where, strict):
    # the module's own state_dict() keys, so buffers would count too if Module grows them
    params = {name: np.asarray(value) for name, value in module.state_dict().items()}
    missing = [n for n in params if n not in state]
    unexpected = [n for n in state if n not in params]
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing parameter(s) {', '.join(map(repr, missing))} (in the "
                         f"model, not in the file)")
        if unexpected:
            parts.append(f"unexpected parameter(s) {', '.join(map(repr, unexpected))} (in "
                         f"the file, not in the model)")
        raise CheckpointKeyError(f"{where} does not fit {type(module).__name__}: "
                                 f"{'; '.join(parts)}")
    for name, p in params.items():
        if name in state and state[name].shape != p.shape:
            raise CheckpointError(f"{where}: shape mismatch for parameter {name!r}: the file "
                                  f"has {state[name].shape}, the model {p.shape}")


def load(path, module=None, optimizer=None, strict=True):
    """Read the checkpoint at `path` and return the model's state dict (an OrderedDict
    name -> ndarray, in file order). With `module`, load it into the module
    (`module.load_state_dict(..., strict=strict)`); with `optimizer`, restore its state and
    hyperparameters too. Nothing is changed unless the whole checkpoint fits.

    Raises FileNotFoundError for a missing file and CheckpointError (a ValueError) naming
    the file, and the parameter where there is one, for a corrupt or truncated file, a shape
    mismatch, missing optimizer state, or (CheckpointKeyError, also a KeyError) missing or
    unexpected parameter names."""
    path = os.fspath(path)
    where = f"checkpoint {path!r}"
    arrays = _read(path)
    state = OrderedDict((k, v) for k, v in arrays.items() if not k.startswith(OPTIMIZER_PREFIX))
    if module is not None:
        _check_fits(module, state, where, strict)
    if optimizer is not None:
        opt_state = _optimizer_state(arrays, where)
        if opt_state is None:
            raise CheckpointError(f"{where} has no optimizer state (save it with "
                                  f"save(..., optimizer=opt))")
        try:
            optimizer.load_state_dict(opt_state)
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{where}: cannot restore {type(optimizer).__name__}: "
                                  f"{e}") from e
    if module is not None:
        try:
            module.load_state_dict(state, strict=strict)
        except KeyError as e:
            raise CheckpointKeyError(f"{where}: {e.args[0] if e.args else e}") from e
        except ValueError as e:
            raise CheckpointError(f"{where}: {e}") from e
    return state
