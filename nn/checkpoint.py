"""Checkpoints: a model's parameters (and an optimizer's state, when asked) in one `.npz` file.

    nn.checkpoint.save(model, "run.npz", optimizer=opt)
    state = nn.checkpoint.load("run.npz", module=model, optimizer=opt)

The file is an ordinary numpy archive (the format `np.savez` writes) holding only numeric
arrays, so `np.load(path, allow_pickle=False)` reads it: one array per parameter under its
dotted name, and the optimizer's state under keys starting with `__optimizer__/`
(`__optimizer__/state/<index>/<name>`, `__optimizer__/param_groups/<group>/<hyperparameter>`;
tuples such as Adam's betas become 1-d arrays).

Saving is atomic (nn/atomic_file.py): a temporary `.<name>.tmp-<pid>-<hex>` in the destination
folder, fsync'ed, then renamed over the destination. A failed save (disk full, Ctrl-C) leaves
the previous file as it was and no temporary file; one killed outright leaves its temporary
file, which the next save to that path removes. Only a regular file is replaced: a symbolic
link, a directory or a device at the path is refused.

Loading changes nothing unless the whole checkpoint is valid. The archive is read defensively
(nn/npz_archive.py: no pickles, no duplicate entries, no array larger than the file backs),
then every entry is checked against the model and the optimizer (names, shapes, dtypes,
values) before anything is written. A floating value is converted to the parameter's dtype
only when no value changes: float16 or float32 into float64 always, float64 into float32 only
where every value is a float32 exactly. Parameters, hyperparameters and optimizer state must
be finite; step counts whole numbers >= 0.
"""
import errno
import os
import zipfile
import zlib
from collections import OrderedDict

import numpy as np

from autograd_core import Tensor

from .atomic_file import DestinationError, write_atomically
from .npz_archive import NUMERIC_KINDS, ArchiveError, describe_dtype, read_npz

__all__ = ["save", "load", "CheckpointError", "CheckpointKeyError", "CheckpointWriteError",
           "OPTIMIZER_PREFIX"]

OPTIMIZER_PREFIX = "__optimizer__/"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or that does not fit the model or optimizer.
    The message names the file and, where there is one, the parameter."""


class CheckpointKeyError(CheckpointError, KeyError):
    """Missing or unexpected parameter names (also a KeyError, as load_state_dict raises)."""

    __str__ = ValueError.__str__  # KeyError would quote the whole message


class CheckpointWriteError(OSError, CheckpointError):
    """A save that failed (disk full, no permission, no such folder): an OSError carrying the
    cause's errno, and a CheckpointError. The previous file, if any, is unchanged."""

    def __str__(self):
        return self.strerror if self.strerror is not None else super().__str__()


# ---- saving -------------------------------------------------------------------------------

def _as_array(value, key, where):
    if isinstance(value, Tensor):
        value = value.numpy()
    elif hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        value = value.detach().numpy()
    arr = np.asarray(value)
    if arr.dtype.kind not in NUMERIC_KINDS:
        raise CheckpointError(f"{where}: {key!r} has dtype {arr.dtype}; a checkpoint holds "
                              f"only numeric arrays (bool, integer, floating; no pickled "
                              f"objects)")
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


def save(module_or_state_dict, path, optimizer=None):
    """Write a Module's parameters (or a state dict name -> array) to `path` as an .npz
    archive, with `optimizer`'s state and hyperparameters when given. Atomic: a crash or an
    error leaves any previous file at `path` untouched. Returns `path` (the name is used as
    given: no ".npz" is appended).

    Raises CheckpointError when `path` is a symbolic link, a directory, a device or anything
    else but a regular file, and CheckpointWriteError (an OSError too) when the file cannot
    be written: no such folder, no permission, disk full."""
    path = os.fspath(path)
    where = f"checkpoint {path!r}"
    arrays = _model_arrays(module_or_state_dict, where)
    if optimizer is not None:
        arrays.update(_optimizer_arrays(optimizer, where))
    existed = os.path.lexists(path)
    try:
        write_atomically(path, lambda f: _write_npz(f, arrays))
    except DestinationError as e:
        raise CheckpointError(f"{where} cannot be saved: {e}") from None
    except OSError as e:
        # one error, not the chain of the zip file and the file failing to close
        reason = e.strerror or str(e)
        if e.filename is not None and e.filename != path:
            reason += f" ({e.filename})"
        kept = "the previous file is unchanged" if existed else "nothing was written"
        raise CheckpointWriteError(e.errno, f"{where} cannot be saved: {reason}; "
                                            f"{kept}") from None
    return path


# ---- loading: reading ----------------------------------------------------------------------

_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError,
                KeyError, IndexError, zlib.error, NotImplementedError)


def _read(path):
    """All arrays of the archive at `path`, in file order."""
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, "no such checkpoint file", path)
    where = f"checkpoint {path!r}"
    try:
        return read_npz(path)
    except ArchiveError as e:
        raise CheckpointError(f"{where} cannot be read: {e}") from None
    except PermissionError as e:
        raise CheckpointError(f"{where} cannot be read: {e.strerror}") from None
    except _READ_ERRORS as e:
        raise CheckpointError(f"{where} cannot be read: the file is corrupt, truncated or not "
                              f"a checkpoint ({type(e).__name__}: {e})") from e


# ---- loading: checking every entry before anything is written ----------------------------

def _convert(arr, dtype, what, where):
    """`arr` as `dtype`, refused unless it is floating, finite, and no value changes."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f":  # not a Parameter: no conversion at all
        if arr.dtype != dtype:
            raise CheckpointError(f"{where}: {what} has dtype {arr.dtype} in the file and "
                                  f"{dtype} in the model")
        return arr.copy()
    if arr.dtype.kind != "f":
        raise CheckpointError(f"{where}: {what} holds {describe_dtype(arr.dtype)}; it takes "
                              f"floating values ({dtype})")
    bad = arr.size - np.count_nonzero(np.isfinite(arr))
    if bad:
        raise CheckpointError(f"{where}: {what} holds {bad} non-finite value(s) (nan or inf) "
                              f"among {arr.size}; it must be finite")
    with np.errstate(over="ignore"):
        out = arr.astype(dtype)
        changed = np.flatnonzero(out.astype(arr.dtype).reshape(-1) != arr.reshape(-1))
    if changed.size:
        i = changed[0]
        raise CheckpointError(
            f"{where}: {what} is {arr.dtype} in the file and {dtype} in the model, and "
            f"{changed.size} of its {arr.size} values are not exactly {dtype} (the first: "
            f"{arr.reshape(-1)[i].item()!r} would become {out.reshape(-1)[i].item()!r}); load "
            f"it into a {arr.dtype} model (model.to(np.{arr.dtype}))")
    return out


def _stage_module(module, state, where, strict):
    """The values to write into `module`: name -> array of the parameter's dtype."""
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
    common = [n for n in params if n in state]
    for name in common:
        if state[name].shape != params[name].shape:
            raise CheckpointError(f"{where}: shape mismatch for parameter {name!r}: the file "
                                  f"has {state[name].shape}, the model {params[name].shape}")
    return OrderedDict((name, _convert(state[name], params[name].dtype,
                                       f"parameter {name!r}", where)) for name in common)


def _parse_optimizer_entries(arrays, where):
    """{"state": {index: {name: array}}, "param_groups": {g: {name: array}}} from the keys
    under OPTIMIZER_PREFIX, or None when there are none."""
    groups, state = {}, {}
    for key, value in arrays.items():
        if not key.startswith(OPTIMIZER_PREFIX):
            continue
        parts = key[len(OPTIMIZER_PREFIX):].split("/")
        try:
            if len(parts) != 3 or parts[0] not in ("param_groups", "state") or not parts[2]:
                raise ValueError
            index = int(parts[1])
            if index < 0 or str(index) != parts[1]:
                raise ValueError
        except ValueError:
            raise CheckpointError(f"{where}: unexpected optimizer entry {key!r}") from None
        table = groups if parts[0] == "param_groups" else state
        table.setdefault(index, {})[parts[2]] = value
    if not groups and not state:
        return None
    if sorted(groups) != list(range(len(groups))):
        raise CheckpointError(f"{where}: the optimizer's parameter groups are numbered "
                              f"{sorted(groups)}, not 0..{len(groups) - 1}")
    return {"state": state, "param_groups": groups}


def _group_params(value, g, where):
    key = f"{OPTIMIZER_PREFIX}param_groups/{g}/params"
    if value.dtype.kind not in "iu" or value.ndim > 1:
        raise CheckpointError(f"{where}: {key!r} holds {describe_dtype(value.dtype)} of shape "
                              f"{value.shape}; it lists parameter indices (integers)")
    indices = [int(i) for i in value.reshape(-1)]
    if any(i < 0 for i in indices) or len(set(indices)) != len(indices):
        raise CheckpointError(f"{where}: {key!r} lists the indices {indices}; they must be "
                              f"distinct and >= 0")
    return indices


def _hyperparameter(value, key, where):
    if value.ndim > 1:
        raise CheckpointError(f"{where}: optimizer entry {key!r} has shape {value.shape}; a "
                              f"hyperparameter is a number or a 1-d tuple of numbers")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise CheckpointError(f"{where}: optimizer hyperparameter {key!r} is "
                              f"{value.tolist()}; it must be finite")
    return value


def _step_count(value, key, where):
    whole = value.dtype.kind in "iu" or (value.dtype.kind == "f" and np.isfinite(value).all()
                                         and (value == np.floor(value)).all())
    if value.size != 1 or not whole or (value < 0).any():
        raise CheckpointError(f"{where}: optimizer entry {key!r} is {value.tolist()!r} "
                              f"({value.dtype}); a step count is a whole number >= 0")
    return np.asarray(int(value.reshape(-1)[0]), dtype=np.int64)


def _stage_optimizer(optimizer, arrays, where):
    """The optimizer state dict to restore, every value checked: what
    optimizer.load_state_dict checks itself (group and parameter counts, state names,
    hyperparameter ranges) is left to it."""
    parsed = _parse_optimizer_entries(arrays, where)
    if parsed is None:
        raise CheckpointError(f"{where} has no optimizer state (save it with "
                              f"save(..., optimizer=opt))")
    prefix = OPTIMIZER_PREFIX
    param_groups, owner = [], {}  # owner: saved index -> the optimizer's parameter
    for g in range(len(parsed["param_groups"])):
        group = dict(parsed["param_groups"][g])
        if "params" not in group:
            raise CheckpointError(f"{where}: optimizer parameter group {g} lacks its 'params'")
        for name, value in group.items():
            if name == "params":
                group[name] = _group_params(value, g, where)
            else:
                group[name] = _hyperparameter(value, f"{prefix}param_groups/{g}/{name}", where)
        if g < len(optimizer.param_groups):
            owner.update(zip(group["params"], optimizer.param_groups[g]["params"]))
        param_groups.append(group)
    counts = getattr(optimizer, "_scalar_state", ())  # per-parameter numbers: step counts
    state = {}
    for index, entry in parsed["state"].items():
        state[index] = {}
        for name, value in entry.items():
            key = f"{prefix}state/{index}/{name}"
            if name in counts:
                value = _step_count(value, key, where)
            elif index in owner and value.shape == owner[index].shape:
                value = _convert(value, owner[index].dtype, f"optimizer state {key!r}", where)
            state[index][name] = value
    return {"state": state, "param_groups": param_groups}


# ---- loading: the public function ----------------------------------------------------------

def load(path, module=None, optimizer=None, strict=True):
    """Read the checkpoint at `path` and return the model's state dict (an OrderedDict
    name -> ndarray, as stored, in file order). With `module`, load it into the module
    (`strict` as in `load_state_dict`); with `optimizer`, restore its state and
    hyperparameters too. Nothing is changed unless the whole checkpoint fits: every entry is
    checked (names, shapes, dtypes, values; see the module's docstring) before any is
    written.

    Raises FileNotFoundError for a missing file and CheckpointError (a ValueError) naming
    the file, and the parameter where there is one, for anything else: a corrupt, truncated
    or hostile file, a shape mismatch, a value that would change on conversion or is not
    finite, missing optimizer state, or (CheckpointKeyError, also a KeyError) missing or
    unexpected parameter names."""
    path = os.fspath(path)
    where = f"checkpoint {path!r}"
    arrays = _read(path)
    state = OrderedDict((k, v) for k, v in arrays.items() if not k.startswith(OPTIMIZER_PREFIX))
    staged = _stage_module(module, state, where, strict) if module is not None else None
    opt_state = _stage_optimizer(optimizer, arrays, where) if optimizer is not None else None
    backup = optimizer.state_dict() if optimizer is not None else None
    if optimizer is not None:
        try:  # load_state_dict checks all of it before it changes anything
            optimizer.load_state_dict(opt_state)
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{where}: cannot restore {type(optimizer).__name__}: "
                                  f"{e}") from e
    if module is not None:
        try:
            module.load_state_dict(staged, strict=strict)
        except BaseException as e:  # checked above, so not expected: undo the optimizer
            if optimizer is not None:
                optimizer.load_state_dict(backup)
            if isinstance(e, KeyError):
                raise CheckpointKeyError(f"{where}: {e.args[0] if e.args else e}") from e
            if isinstance(e, ValueError):
                raise CheckpointError(f"{where}: {e}") from e
            raise
    return state
