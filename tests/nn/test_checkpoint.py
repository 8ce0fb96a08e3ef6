"""Checkpoints: round-trips of parameters and optimizer state, atomic writes, and clear errors
for missing, corrupt, truncated or mismatched files."""
import errno
import os
import pathlib
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

import autograd_core as ag
from nn import checkpoint
from nn.checkpoint import (CheckpointError, CheckpointKeyError, CheckpointWriteError,
                           load, save)
from nn.module import Module, Parameter, Sequential
from nn.optim import SGD, Adam


class Affine(Module):
    def __init__(self, n_in=3, n_out=2, seed=0, dtype=np.float64):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.weight = Parameter(rng.normal(size=(n_out, n_in)).astype(dtype))
        self.bias = Parameter(rng.normal(size=(n_out,)).astype(dtype))

    def forward(self, x):
        return x @ self.weight.T + self.bias


class Net(Module):
    def __init__(self, seed=0, extra=False):
        super().__init__()
        self.scale = Parameter(np.array([1.5 + seed], dtype=np.float32))
        self.body = Sequential(Affine(3, 4, seed), Affine(4, 2, seed + 1, np.float32))
        if extra:
            self.gain = Parameter(np.ones(2))

    def forward(self, x):
        return self.body(x) * self.scale


NAMES = ["scale", "body.0.weight", "body.0.bias", "body.1.weight", "body.1.bias"]


def train(model, opt, steps, seed=5):
    x = ag.Tensor(np.random.default_rng(seed).normal(size=(6, 3)))
    for _ in range(steps):
        opt.zero_grad()
        (model(x) ** 2).mean().backward()
        opt.step()


def values(model):
    return {n: p.numpy().copy() for n, p in model.named_parameters()}


# ---- round-trips -------------------------------------------------------------------------

def test_module_round_trip(tmp_path):
    src, dst = Net(seed=0), Net(seed=7)
    path = tmp_path / "model.npz"
    assert save(src, path) == str(path)
    state = load(path, module=dst)
    assert isinstance(state, OrderedDict) and list(state) == NAMES
    for name, p in dst.named_parameters():
        np.testing.assert_array_equal(p.numpy(), src.state_dict()[name])
        np.testing.assert_array_equal(state[name], p.numpy())
        assert p.dtype == src.state_dict()[name].dtype  # float32 and float64 both kept
    assert dst.body[1].weight.dtype == np.float32
    # a plain state dict saves too, and the file is an ordinary numpy archive
    save(OrderedDict(w=np.arange(3.0), n=np.int64(4), t=ag.Tensor([1.0, 2.0])),
         str(tmp_path / "plain.npz"))
    with np.load(tmp_path / "plain.npz", allow_pickle=False) as data:
        assert data.files == ["w", "n", "t"]
        np.testing.assert_array_equal(data["w"], [0.0, 1.0, 2.0])
        assert data["n"] == 4 and data["t"].dtype == np.float32


def test_file_is_readable_without_pickle(tmp_path):
    model, path = Net(), tmp_path / "c.npz"
    opt = Adam(model.parameters(), lr=0.01)
    train(model, opt, 1)
    save(model, path, optimizer=opt)
    with np.load(path, allow_pickle=False) as data:
        keys = data.files
        arrays = {k: data[k] for k in keys}
    assert keys[:5] == NAMES
    assert all(k.startswith("__optimizer__/") for k in keys[5:])
    assert all(a.dtype.kind in "biuf" for a in arrays.values())
    np.testing.assert_array_equal(arrays["__optimizer__/param_groups/0/betas"], [0.9, 0.999])
    np.testing.assert_array_equal(arrays["__optimizer__/param_groups/0/params"], range(5))
    assert arrays["__optimizer__/state/2/step"] == 1


@pytest.mark.parametrize("make_opt", [
    lambda ps: Adam(ps, lr=0.01, betas=(0.8, 0.99), weight_decay=1e-3),
    lambda ps: SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
], ids=["adam", "sgd-nesterov"])
def test_optimizer_round_trip_continues_identically(tmp_path, make_opt):
    model = Net()
    opt = make_opt(model.parameters())
    train(model, opt, 3)
    path = tmp_path / "run.npz"
    save(model, path, optimizer=opt)
    train(model, opt, 2)  # continue without interruption
    model2 = Net(seed=3)
    opt2 = make_opt(model2.parameters())
    opt2.param_groups[0]["lr"] = 9.0  # restored from the file
    load(path, module=model2, optimizer=opt2)
    assert opt2.param_groups[0] == {**opt.param_groups[0], "params": opt2.param_groups[0]["params"]}
    assert all(type(v) is type(opt.param_groups[0][k]) for k, v in opt2.param_groups[0].items()
               if k != "params")  # bools stay bools, betas a tuple of floats
    train(model2, opt2, 2)  # resume from the checkpoint
    for name, v in values(model).items():
        np.testing.assert_array_equal(values(model2)[name], v)


def test_optimizer_saved_before_its_first_step(tmp_path):
    model = Net()
    opt = SGD(model.parameters(), lr=0.3, momentum=0.5)
    save(model, tmp_path / "c.npz", optimizer=opt)
    opt2 = SGD(Net(seed=1).parameters(), lr=0.1)
    load(tmp_path / "c.npz", optimizer=opt2)
    assert opt2.state == {} and opt2.param_groups[0]["lr"] == 0.3
    assert opt2.param_groups[0]["momentum"] == 0.5


def test_load_without_module_returns_state_and_strict_false(tmp_path):
    path = tmp_path / "c.npz"
    save(Net(seed=1), path)
    state = load(path)
    np.testing.assert_array_equal(state["scale"], [2.5])
    bigger = Net(seed=4, extra=True)
    load(path, module=bigger, strict=False)  # 'gain' is missing from the file: kept
    np.testing.assert_array_equal(bigger.scale.numpy(), [2.5])
    np.testing.assert_array_equal(bigger.gain.numpy(), [1.0, 1.0])


def test_pathlib_and_odd_parameter_names(tmp_path):
    class Odd(Module):
        def __init__(self):
            super().__init__()
            self.file = Parameter(np.array([1.0, 2.0]))  # np.savez(file=...) would clash
            self.allow_pickle = Parameter(np.array([3.0]))

    path = pathlib.Path(tmp_path) / "odd"  # no .npz appended
    save(Odd(), path)
    assert os.listdir(tmp_path) == ["odd"]
    assert list(load(path)) == ["file", "allow_pickle"]


# ---- atomic writes -----------------------------------------------------------------------

def fail_after(n_calls, real, exc=OSError("disk full")):
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) > n_calls:
            raise exc
        return real(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("what", ["write", "replace", "fsync", "interrupt"])
def test_failed_save_leaves_the_old_checkpoint_and_no_temp_file(tmp_path, monkeypatch, what):
    path = tmp_path / "ckpt.npz"
    save(Net(seed=0), path)
    before = path.read_bytes()
    if what == "write":  # fail in the middle of the archive, after two arrays
        monkeypatch.setattr(np.lib.format, "write_array",
                            fail_after(2, np.lib.format.write_array))
    elif what == "replace":
        monkeypatch.setattr(checkpoint.os, "replace", fail_after(0, os.replace))
    elif what == "fsync":
        monkeypatch.setattr(checkpoint.os, "fsync", fail_after(0, os.fsync))
    else:
        monkeypatch.setattr(np.lib.format, "write_array",
                            fail_after(1, np.lib.format.write_array, KeyboardInterrupt()))
    with pytest.raises((OSError, KeyboardInterrupt)):
        save(Net(seed=9), path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ckpt.npz"]
    assert path.read_bytes() == before
    np.testing.assert_array_equal(load(path)["scale"], [1.5])


def test_failed_first_save_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint.os, "replace", fail_after(0, os.replace))
    with pytest.raises(OSError, match="disk full"):
        save(Net(), tmp_path / "new.npz")
    assert os.listdir(tmp_path) == []


def test_save_overwrites_and_reports_bad_destinations(tmp_path):
    path = tmp_path / "c.npz"
    save(Net(seed=0), path)
    save(Net(seed=2), path)
    np.testing.assert_array_equal(load(path)["scale"], [3.5])
    assert os.listdir(tmp_path) == ["c.npz"]
    with pytest.raises(CheckpointWriteError, match="folder of the file does not exist") as info:
        save(Net(), tmp_path / "no" / "such" / "c.npz")
    assert info.value.errno == errno.ENOENT and isinstance(info.value, OSError)
    with pytest.raises(CheckpointError, match="reserved"):
        save({"__optimizer__/x": np.zeros(1)}, path)
    with pytest.raises(CheckpointError, match=r"'names' has dtype .*numeric"):
        save({"names": np.array(["a", None], dtype=object)}, path)
    np.testing.assert_array_equal(load(path)["scale"], [3.5])  # untouched by the refusals


# ---- bad files -----------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint file.*nope.npz"):
        load(tmp_path / "nope.npz")


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, -1])
def test_truncated_file(tmp_path, fraction):
    path = tmp_path / "c.npz"
    save(Net(), path, optimizer=SGD(Net().parameters(), lr=0.1))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 1] if fraction == -1 else data[:int(len(data) * fraction)])
    model = Net(seed=4)
    with pytest.raises(CheckpointError, match=r"c\.npz' cannot be read: the file is corrupt, "
                                              r"truncated"):
        load(path, module=model)
    np.testing.assert_array_equal(model.scale.numpy(), [5.5])  # untouched


@pytest.mark.parametrize("content", [
    b"this is not a checkpoint\n",
    bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8)),
    b"PK\x03\x04" + b"\x00" * 100,
], ids=["text", "random", "zip-magic"])
def test_garbage_file(tmp_path, content):
    path = tmp_path / "junk.npz"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="junk.npz' cannot be read"):
        load(path)


def test_flipped_byte_is_caught_by_the_crc(tmp_path):
    path = tmp_path / "c.npz"
    save({"w": np.zeros(1000)}, path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside w's zeros
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="CRC"):
        load(path)


def test_other_numpy_files_are_refused(tmp_path):
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(CheckpointError, match="single .npy array"):
        load(tmp_path / "single.npy")
    np.savez(tmp_path / "objects.npz", w=np.array([{"a": 1}], dtype=object))  # pickled
    with pytest.raises(CheckpointError, match="objects.npz' cannot be read.*pickle"):
        load(tmp_path / "objects.npz")
    with zipfile.ZipFile(tmp_path / "other.npz", "w") as zf:
        zf.writestr("notes.txt", "hello")
    with pytest.raises(CheckpointError, match="'notes.txt' is not a numpy array"):
        load(tmp_path / "other.npz")


# ---- mismatches ------------------------------------------------------------------------------

def test_missing_key_names_file_and_parameter(tmp_path):
    path = tmp_path / "small.npz"
    save(Net(), path)
    model = Net(seed=2, extra=True)
    with pytest.raises(KeyError) as info:
        load(path, module=model)
    msg = str(info.value)
    assert isinstance(info.value, CheckpointKeyError) and isinstance(info.value, ValueError)
    assert "small.npz" in msg and "missing parameter(s) 'gain'" in msg and "unexpected" not in msg
    np.testing.assert_array_equal(model.scale.numpy(), [3.5])  # nothing loaded


def test_unexpected_key_names_file_and_parameter(tmp_path):
    path = tmp_path / "big.npz"
    save(Net(extra=True), path)
    with pytest.raises(CheckpointKeyError, match=r"big\.npz' does not fit Net: unexpected "
                                                 r"parameter\(s\) 'gain'"):
        load(path, module=Net())
    load(path, module=Net(), strict=False)  # ignored when not strict


def test_shape_mismatch_names_file_parameter_and_shapes(tmp_path):
    path = tmp_path / "shapes.npz"
    state = Net().state_dict()
    state["body.0.weight"] = np.zeros((5, 3))
    save(state, path)
    model = Net(seed=1)
    for strict in (True, False):
        with pytest.raises(CheckpointError, match=r"shapes\.npz': shape mismatch for parameter "
                                                  r"'body\.0\.weight': the file has \(5, 3\), "
                                                  r"the model \(4, 3\)"):
            load(path, module=model, strict=strict)
    np.testing.assert_array_equal(model.scale.numpy(), [2.5])


def test_optimizer_state_missing_or_mismatched(tmp_path):
    path = tmp_path / "noopt.npz"
    save(Net(), path)
    model = Net(seed=1)
    with pytest.raises(CheckpointError, match=r"noopt\.npz' has no optimizer state"):
        load(path, module=model, optimizer=SGD(model.parameters(), lr=0.1))
    np.testing.assert_array_equal(model.scale.numpy(), [2.5])  # nothing loaded

    src = Net()
    adam = Adam(src.parameters(), lr=0.01)
    train(src, adam, 1)
    save(src, tmp_path / "adam.npz", optimizer=adam)
    sgd = SGD(model.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(CheckpointError, match=r"adam\.npz': cannot restore SGD: .*unknown "
                                              r"hyperparameter"):
        load(tmp_path / "adam.npz", module=model, optimizer=sgd)
    np.testing.assert_array_equal(model.scale.numpy(), [2.5])
    assert sgd.param_groups[0]["lr"] == 0.1

    small = Affine(3, 4)
    with pytest.raises(CheckpointError, match="parameter group 0 has 5 parameter"):
        load(tmp_path / "adam.npz", optimizer=Adam(small.parameters()))
