"""nn.load refuses a bad or hostile checkpoint before it writes anything: after every refusal
the model and the optimizer are bit-for-bit what they were. Also the conversions it accepts."""
import io
import os
import struct
import threading
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest

import autograd_core as ag
from nn import npz_archive
from nn.checkpoint import CheckpointError, load, save
from nn.module import Module, Parameter
from nn.optim import SGD, Adam

NAMES = ["p0", "p1", "p2", "p3", "p4", "p5"]


class Six(Module):
    """Six parameters, the fourth float32, the rest float64."""

    def __init__(self, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        for i, name in enumerate(NAMES):
            dtype = np.float32 if i == 3 else np.float64
            setattr(self, name, Parameter(rng.normal(size=(2, 3)).astype(dtype)))

    def forward(self, x):
        out = x
        for name in NAMES:
            out = out * getattr(self, name)
        return out.sum()


def trained(seed, lr):
    model = Six(seed)
    opt = Adam(model.parameters(), lr=lr, betas=(0.8, 0.99))
    x = ag.Tensor(np.full((2, 3), 0.5))
    for _ in range(2):
        opt.zero_grad()
        model(x).backward()
        opt.step()
    return model, opt


def snapshot(model, opt):
    """Everything a load could change, down to the bytes and the types."""
    params = [(n, id(p), p.dtype, p.shape, p.numpy().tobytes(), p.version)
              for n, p in model.named_parameters()]
    groups = [{k: [id(p) for p in v] if k == "params" else (type(v), repr(v))
               for k, v in g.items()} for g in opt.param_groups]
    state = {id(p): {k: (v.dtype, v.shape, v.tobytes()) if isinstance(v, np.ndarray)
                     else (type(v), v) for k, v in entry.items()}
             for p, entry in opt.state.items()}
    return params, groups, state


def npy_bytes(arr):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=True)
    return buf.getvalue()


def write_raw(path, entries, compression=zipfile.ZIP_STORED):
    """An .npz written member by member, bypassing save's checks; `entries` holds
    (name without .npy, array or raw bytes) pairs, repeats allowed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile: "Duplicate name"
        with zipfile.ZipFile(path, "w", compression=compression) as zf:
            for name, value in entries:
                data = value if isinstance(value, bytes) else npy_bytes(value)
                zf.writestr(name + ".npy", data)


@pytest.fixture
def good_file(tmp_path):
    """A valid checkpoint of another model (other values, lr 0.5) and its entries."""
    model, opt = trained(seed=1, lr=0.5)
    path = tmp_path / "c.npz"
    save(model, path, optimizer=opt)
    with np.load(path) as data:
        entries = {k: data[k] for k in data.files}
    return path, entries


@pytest.fixture
def target():
    return trained(seed=0, lr=0.01)


OPT = "__optimizer__/"


def replace(key, value):
    return lambda e: {**e, key: value(e[key]) if callable(value) else value}


def drop(key):
    return lambda e: {k: v for k, v in e.items() if k != key}


BAD_ENTRIES = {
    # the model's entries
    "string in the last parameter": (replace("p5", lambda v: np.full(v.shape, "x")), "strings"),
    "complex parameter": (replace("p0", lambda v: v.astype(np.complex128)), "complex numbers"),
    "object parameter": (replace("p0", lambda v: v.astype(object)), "pickled Python objects"),
    "record parameter": (replace("p0", np.zeros(6, dtype=[("a", "f8")]).reshape(2, 3)),
                         "records"),
    "integer parameter": (replace("p1", lambda v: np.ones(v.shape, np.int64)),
                          r"'p1' holds integers \(dtype int64\); it takes floating values "
                          r"\(float64\)"),
    "bool parameter": (replace("p1", lambda v: np.ones(v.shape, bool)), "holds booleans"),
    "nan in the last parameter": (replace("p5", lambda v: np.where(v > 0, np.nan, v)),
                                  "'p5' holds [1-6] non-finite value"),
    "inf parameter": (replace("p2", lambda v: np.full(v.shape, -np.inf)), "non-finite"),
    "float64 not exactly float32": (replace("p3", lambda v: np.full(v.shape, 0.1)),
                                    r"'p3' is float64 in the file and float32 in the model, "
                                    r"and 6 of its 6 values are not exactly float32 \(the "
                                    r"first: 0.1 would become 0.10000000149011612\)"),
    "float64 beyond float32's range": (replace("p3", lambda v: np.full(v.shape, 1e300)),
                                       "not exactly float32"),
    "shape of the last parameter": (replace("p5", np.zeros((3, 2))),
                                    r"shape mismatch for parameter 'p5'"),
    "missing parameter": (drop("p4"), "missing parameter"),
    "unexpected parameter": (replace("p6", np.zeros((2, 3))), "unexpected parameter"),
    # the optimizer's entries
    "lr nan": (replace(OPT + "param_groups/0/lr", np.array(np.nan)),
               "param_groups/0/lr' is nan; it must be finite"),
    "lr inf": (replace(OPT + "param_groups/0/lr", np.array(np.inf)), "must be finite"),
    "lr negative": (replace(OPT + "param_groups/0/lr", np.array(-1.0)), "invalid lr"),
    "lr a string": (replace(OPT + "param_groups/0/lr", np.array("0.1")), "strings"),
    "lr complex": (replace(OPT + "param_groups/0/lr", np.array(1j)), "complex"),
    "betas 2-d": (replace(OPT + "param_groups/0/betas", np.zeros((2, 2))), r"shape \(2, 2\)"),
    "betas nan": (replace(OPT + "param_groups/0/betas", np.array([0.9, np.nan])), "finite"),
    "params floating": (replace(OPT + "param_groups/0/params", np.arange(6.0)),
                        "parameter indices"),
    "params repeated": (replace(OPT + "param_groups/0/params", np.array([0, 1, 2, 3, 4, 4])),
                        "distinct"),
    "params too few": (replace(OPT + "param_groups/0/params", np.arange(5)),
                       "group 0 has 5 parameter"),
    "unknown hyperparameter": (replace(OPT + "param_groups/0/momentum", np.array(0.9)),
                               "unknown hyperparameter"),
    "no params list": (drop(OPT + "param_groups/0/params"), "lacks its 'params'"),
    "odd optimizer key": (replace(OPT + "groups/0/lr", np.array(0.1)),
                          "unexpected optimizer entry"),
    "step negative": (replace(OPT + "state/5/step", np.array(-1)), "whole number >= 0"),
    "step fractional": (replace(OPT + "state/5/step", np.array(2.5)), "whole number"),
    "step nan": (replace(OPT + "state/5/step", np.array(np.nan)), "whole number"),
    "step an array": (replace(OPT + "state/5/step", np.array([1, 2])), "whole number"),
    "moment nan": (replace(OPT + "state/5/exp_avg", lambda v: v * np.nan), "non-finite"),
    "moment not exactly float32": (replace(OPT + "state/3/exp_avg",
                                           lambda v: np.full(v.shape, 0.1)),
                                   "not exactly float32"),
    "moment shape": (replace(OPT + "state/5/exp_avg_sq", np.zeros(6)), "shape mismatch"),
    "moment missing": (drop(OPT + "state/5/exp_avg_sq"), "lacks 'exp_avg_sq'"),
    "state of no parameter": (replace(OPT + "state/9/step", np.array(1)), "parameter 9"),
}


@pytest.mark.parametrize("case", list(BAD_ENTRIES))
def test_a_refused_load_changes_nothing(tmp_path, good_file, target, case):
    _, entries = good_file
    change, message = BAD_ENTRIES[case]
    path = tmp_path / "bad.npz"
    write_raw(path, change(entries).items())
    model, opt = target
    before = snapshot(model, opt)
    with pytest.raises(CheckpointError, match=message) as info:
        load(path, module=model, optimizer=opt)
    assert "bad.npz" in str(info.value) and "\n" not in str(info.value)
    assert snapshot(model, opt) == before


def test_the_reported_case_a_string_array_after_five_good_parameters(tmp_path, good_file,
                                                                       target):
    # The file's first five parameters and its learning rate are valid and differ from the
    # model's; the sixth is a string array. Nothing of the file may reach model or optimizer.
    _, entries = good_file
    entries["p5"] = np.full((2, 3), "w")
    path = tmp_path / "strings.npz"
    write_raw(path, entries.items())
    model, opt = target
    before = snapshot(model, opt)
    with pytest.raises(CheckpointError, match=r"'p5.npy' holds strings \(dtype <U1\)"):
        load(path, module=model, optimizer=opt)
    assert snapshot(model, opt) == before
    assert opt.param_groups[0]["lr"] == 0.01
    assert not np.array_equal(model.p0.numpy(), entries["p0"])
    # the same file, fixed, loads every value
    entries["p5"] = np.zeros((2, 3))
    write_raw(path, entries.items())
    load(path, module=model, optimizer=opt)
    np.testing.assert_array_equal(model.p0.numpy(), entries["p0"])
    assert opt.param_groups[0]["lr"] == 0.5


def test_model_only_and_optimizer_only_refusals_change_nothing(tmp_path, good_file, target):
    _, entries = good_file
    model, opt = target
    before = snapshot(model, opt)
    path = tmp_path / "bad.npz"
    write_raw(path, {**entries, "p2": np.full((2, 3), np.nan)}.items())
    with pytest.raises(CheckpointError, match="'p2' holds 6 non-finite"):
        load(path, module=model)
    write_raw(path, {**entries, OPT + "param_groups/0/lr": np.array(np.inf)}.items())
    with pytest.raises(CheckpointError, match="/lr' is inf"):
        load(path, optimizer=opt)
    assert snapshot(model, opt) == before


# ---- hostile archives -------------------------------------------------------------------

def npy_header(shape, descr="<f8", version=1):
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode("latin1")
    pad = 64 - (10 + len(header) + 1) % 64
    header += b" " * pad + b"\n"
    return b"\x93NUMPY" + bytes([version, 0]) + struct.pack("<H", len(header)) + header


@pytest.mark.parametrize("shape, message", [
    ((10 ** 12,), r"declares an array of shape \(1000000000000,\) and dtype float64 "
                  r"\(8000000000000 bytes\), but holds 48 bytes"),
    ((2 ** 40, 2 ** 40, 2 ** 40), "but holds 48 bytes"),  # past int64: no overflow
    ((-1, 6), r"declares the shape \(-1, 6\)"),
    ((5,), r"\(40 bytes\), but holds 48 bytes"),  # a little too small: 8 bytes left over
    ((7,), r"\(56 bytes\), but holds 48 bytes"),
])
def test_a_header_that_declares_the_wrong_size_is_refused_before_reading(tmp_path, target,
                                                                          shape, message):
    path = tmp_path / "huge.npz"
    write_raw(path, [("p0", npy_header(shape) + np.zeros(6).tobytes())])
    model, opt = target
    before = snapshot(model, opt)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=message):
            load(path, module=model, optimizer=opt)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 ** 20  # nothing near the declared size was allocated
    assert snapshot(model, opt) == before


def test_an_oversized_header_is_refused(tmp_path):
    path = tmp_path / "header.npz"
    # a version 2.0 header may declare up to 4 GB of itself; numpy's reader stops at 10,000
    write_raw(path, [("p0", npy_header((6,), version=2)[:8]
                      + struct.pack("<I", 200_000) + b" " * 200_000)])
    with pytest.raises(CheckpointError, match="cannot be read.*(header|Header)"):
        load(path)


def patch_central_directory(path, offset, value, fmt="<I"):
    """Overwrite a field of the (first) central directory entry of the zip at `path`."""
    data = bytearray(path.read_bytes())
    at = data.index(b"PK\x01\x02")
    data[at + offset:at + offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    path.write_bytes(bytes(data))


def test_a_zip_entry_that_claims_more_than_the_file_holds(tmp_path):
    path = tmp_path / "liar.npz"
    write_raw(path, [("p0", np.zeros(6))])
    patch_central_directory(path, 20, 0xFFFF0000)  # compressed size
    patch_central_directory(path, 24, 0xFFFF0000)  # uncompressed size
    with pytest.raises(CheckpointError, match=r"'p0.npy' claims 4294901760 bytes, beyond the "
                                              r"end of the \d+-byte file"):
        load(path)
    # a deflated entry may not claim more than deflate could expand its bytes to
    path = tmp_path / "bomb.npz"
    write_raw(path, [("p0", np.zeros(6))], compression=zipfile.ZIP_DEFLATED)
    patch_central_directory(path, 24, 0xFFFF0000)
    with pytest.raises(CheckpointError, match="more than its .* compressed bytes can hold"):
        load(path)


def test_encrypted_and_unusual_compression_are_refused(tmp_path):
    path = tmp_path / "enc.npz"
    write_raw(path, [("p0", np.zeros(6))])
    patch_central_directory(path, 8, 0x1, "<H")  # the "encrypted" flag
    with pytest.raises(CheckpointError, match="'p0.npy' is encrypted"):
        load(path)
    write_raw(path, [("p0", np.zeros(6))], compression=zipfile.ZIP_LZMA)
    with pytest.raises(CheckpointError, match="compression method 14"):
        load(path)


def test_duplicate_members_are_refused(tmp_path, good_file, target):
    _, entries = good_file
    path = tmp_path / "dup.npz"
    write_raw(path, [*entries.items(), ("p0", entries["p0"] + 1)])
    model, opt = target
    before = snapshot(model, opt)
    with pytest.raises(CheckpointError, match="the entry 'p0.npy' appears more than once"):
        load(path, module=model, optimizer=opt)
    with pytest.raises(CheckpointError, match="more than once"):
        load(path)
    assert snapshot(model, opt) == before


def test_npy_format_version_3_is_refused(tmp_path):
    path = tmp_path / "v3.npz"
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros(3), version=(3, 0))
    write_raw(path, [("w", buf.getvalue())])
    with pytest.raises(CheckpointError, match=r"format version \(3, 0\)"):
        load(path)


def test_only_regular_files_are_read(tmp_path):
    with pytest.raises(CheckpointError, match="cannot be read: it is a directory"):
        load(tmp_path)
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    result = []
    reader = threading.Thread(target=lambda: result.append(pytest.raises(
        CheckpointError, load, fifo)), daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # unblock the reader before failing
        with open(fifo, "wb"):
            pass
        pytest.fail("load blocked on a FIFO")
    assert "it is not a regular file" in str(result[0].value)
    # a symbolic link to a checkpoint is read as the checkpoint
    save({"w": np.arange(3.0)}, tmp_path / "real.npz")
    os.symlink(tmp_path / "real.npz", tmp_path / "link.npz")
    np.testing.assert_array_equal(load(tmp_path / "link.npz")["w"], [0.0, 1.0, 2.0])


def test_an_unreadable_file_says_so(tmp_path, monkeypatch):
    path = tmp_path / "locked.npz"
    save({"w": np.zeros(2)}, path)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(npz_archive.os, "open", denied)
    with pytest.raises(CheckpointError, match=r"locked\.npz' cannot be read: Permission "
                                              r"denied$"):
        load(path)


# ---- what is accepted -------------------------------------------------------------------

def test_lossless_conversions_are_accepted(tmp_path, target):
    model, opt = target
    rng = np.random.default_rng(3)
    values = {n: rng.normal(size=(2, 3)) for n in NAMES}
    values["p0"] = values["p0"].astype(np.float16)  # into float64: always exact
    values["p1"] = values["p1"].astype(">f8")  # big-endian
    values["p2"] = np.asfortranarray(values["p2"])  # column-major in the file
    values["p3"] = values["p3"].astype(np.float32).astype(np.float64)  # exactly float32
    path = tmp_path / "ok.npz"
    write_raw(path, values.items())
    state = load(path, module=model)
    for name, value in values.items():
        p = getattr(model, name)
        assert p.dtype == (np.float32 if name == "p3" else np.float64)
        np.testing.assert_array_equal(p.numpy(), value.astype(p.dtype))
        np.testing.assert_array_equal(state[name], value)
    assert state["p1"].dtype == np.dtype(">f8") and state["p2"][1, 2] == values["p2"][1, 2]


def test_a_whole_float_step_count_is_taken_as_an_integer(tmp_path, good_file, target):
    # torch keeps Adam's step as a float tensor
    _, entries = good_file
    entries = {**entries, **{f"{OPT}state/{i}/step": np.array(2.0, np.float32)
                             for i in range(6)}}
    path = tmp_path / "step.npz"
    write_raw(path, entries.items())
    model, opt = target
    load(path, module=model, optimizer=opt)
    assert all(type(s["step"]) is int and s["step"] == 2 for s in opt.state.values())


def test_compressed_archives_load(tmp_path):
    model = Six(4)
    np.savez_compressed(tmp_path / "z.npz", **model.state_dict())
    other = Six(5)
    load(tmp_path / "z.npz", module=other)
    for name in NAMES:
        np.testing.assert_array_equal(getattr(other, name).numpy(),
                                      getattr(model, name).numpy())


def test_plain_load_returns_values_as_stored(tmp_path):
    # without a module nothing is converted or judged beyond the file's own soundness
    path = tmp_path / "plain.npz"
    write_raw(path, [("w", np.array([np.nan, 1.0])), ("n", np.array(3, np.int16))])
    state = load(path)
    assert state["n"].dtype == np.int16 and state["n"] == 3
    assert np.isnan(state["w"][0]) and state["w"][1] == 1.0
    state["w"][1] = 5.0  # writable, like np.load's arrays
    assert state["w"][1] == 5.0


def test_sgd_round_trip_still_exact(tmp_path):
    model = Six(2)
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    x = ag.Tensor(np.full((2, 3), 0.5))
    opt.zero_grad()
    model(x).backward()
    opt.step()
    save(model, tmp_path / "s.npz", optimizer=opt)
    model2 = Six(7)
    opt2 = SGD(model2.parameters(), lr=0.3)
    load(tmp_path / "s.npz", module=model2, optimizer=opt2)
    assert opt2.param_groups[0]["nesterov"] is True and opt2.param_groups[0]["momentum"] == 0.9
    for p, q in zip(model.parameters(), model2.parameters()):
        assert p.numpy().tobytes() == q.numpy().tobytes()
        np.testing.assert_array_equal(opt.state[p]["momentum_buffer"],
                                      opt2.state[q]["momentum_buffer"])
