"""Parameters registered in a Module are named after their key in named_parameters(), through
nesting, ModuleList and Sequential, without touching names the user set; state_dict and
checkpoints do not depend on those names."""
import copy
import pickle

import numpy as np
import pytest

import autograd_core as ag
import nn
from nn import checkpoint


def assert_named_as_keys(module):
    pairs = list(module.named_parameters())
    assert pairs
    assert [p.name for _, p in pairs] == [key for key, _ in pairs]


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(np.full((2,), 2.0))
        self.inner = nn.Linear(3, 2, rng=0)
        self.head = nn.Sequential(nn.Linear(2, 4, rng=1), nn.Tanh(), nn.Linear(4, 1, rng=2))
        self.stack = nn.ModuleList([nn.Linear(1, 1, rng=3)])


@pytest.mark.parametrize("make", [
    lambda: nn.MLP([3, 5, 4, 2], rng=0),
    lambda: nn.RecurrentClassifier(3, 4, 2, cell="rnn", rng=0),
    lambda: nn.RecurrentClassifier(3, 4, 2, cell="gru", rng=0),
    lambda: nn.RecurrentClassifier(3, 4, 2, cell="lstm", rng=0, num_layers=2),
    lambda: nn.Sequential(nn.Linear(2, 3, rng=0), nn.Tanh(), nn.Linear(3, 1, rng=1)),
    lambda: nn.ModuleList([nn.Linear(2, 2, rng=0), nn.GRU(2, 3, rng=1)]),
    Block,
], ids=["mlp", "rnn", "gru", "lstm2", "sequential", "modulelist", "nested"])
def test_parameter_names_equal_named_parameters_keys(make):
    assert_named_as_keys(make())


def test_examples_of_dotted_names():
    model = nn.RecurrentClassifier(3, 4, 2, rng=0)
    assert model.rnn.weight_hh_l0.name == "rnn.weight_hh_l0"
    assert model.out.bias.name == "out.bias"
    assert nn.MLP([2, 3, 1], rng=0).layers[1].weight.name == "layers.1.weight"
    assert nn.Linear(2, 3, rng=0).weight.name == "weight"  # a module on its own


def test_a_built_model_assigned_into_a_parent_gets_the_prefix():
    mlp = nn.MLP([2, 3, 1], rng=0)
    outer = nn.Module()
    outer.encoder = mlp
    assert mlp.layers[0].weight.name == "encoder.layers.0.weight"
    assert_named_as_keys(outer)
    top = nn.Module()
    top.model = outer
    assert mlp.layers[0].bias.name == "model.encoder.layers.0.bias"
    assert_named_as_keys(top)


def test_modules_added_after_the_parent_was_placed_are_named_in_full():
    model = nn.Module()
    model.layers = nn.ModuleList()
    model.layers.append(nn.Linear(2, 2, rng=0))  # appended after `layers` was registered
    model.layers.append(nn.Linear(2, 2, rng=1))
    model.layers[1].extra = nn.Parameter(np.zeros(2))
    assert model.layers[1].weight.name == "layers.1.weight"
    assert model.layers[1].extra.name == "layers.1.extra"
    assert_named_as_keys(model)


def test_a_name_set_by_the_user_is_kept():
    lin = nn.Linear(2, 2, rng=0)
    lin.weight.name = "W"  # after registration
    lin.gain = nn.Parameter(np.ones(2), name="g")  # at construction
    parent = nn.Module()
    parent.lin = lin
    assert lin.weight.name == "W" and lin.gain.name == "g"
    assert lin.bias.name == "lin.bias"
    # the keys, and so state_dict, do not change
    assert list(parent.state_dict()) == ["lin.weight", "lin.bias", "lin.gain"]


def test_cleared_name_is_given_again_on_registration():
    lin = nn.Linear(2, 2, rng=0)
    lin.weight.name = None
    parent = nn.Module()
    parent.lin = lin
    assert lin.weight.name == "lin.weight"


def test_shared_parameter_keeps_the_name_of_its_first_registration():
    model = nn.Module()
    model.a = nn.Linear(2, 2, rng=0)
    model.b = nn.Linear(2, 2, rng=1)
    model.b.weight = model.a.weight  # tied
    assert model.a.weight.name == "a.weight"
    assert dict(model.named_parameters())["a.weight"] is model.b.weight
    assert_named_as_keys(model)


def test_slicing_or_reusing_a_module_does_not_rename_it():
    mlp = nn.MLP([2, 3, 4, 1], rng=0)
    tail = mlp.layers[1:]
    again = nn.Sequential(*mlp.layers)
    assert len(tail) == 2 and len(again) == 3
    assert_named_as_keys(mlp)
    assert mlp.layers[2].weight.name == "layers.2.weight"


def test_removed_submodule_is_named_from_where_it_still_is():
    model = nn.Module()
    model.enc = nn.Linear(2, 2, rng=0)
    lin = model.enc
    model.enc = None
    assert lin.weight.name == "weight"
    model.dec = lin
    assert lin.weight.name == "dec.weight"
    del model.dec
    assert lin.bias.name == "bias"


def test_a_new_module_under_the_same_name_is_named():
    model = nn.Module()
    model.enc = nn.Linear(2, 2, rng=0)
    model.enc = nn.Linear(2, 3, rng=1)
    assert model.enc.weight.name == "enc.weight" and model.enc.weight.shape == (3, 2)
    assert_named_as_keys(model)


def test_state_dict_round_trip_is_unchanged(tmp_path):
    model = nn.RecurrentClassifier(3, 4, 2, cell="gru", rng=0, dtype=np.float64)
    model.out.weight.name = "V"  # a user name must not leak into the keys
    state = model.state_dict()
    assert list(state) == ["rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0",
                           "rnn.bias_hh_l0", "out.weight", "out.bias"]
    fresh = nn.RecurrentClassifier(3, 4, 2, cell="gru", rng=1, dtype=np.float64)
    fresh.load_state_dict(state)
    for key, value in fresh.state_dict().items():
        np.testing.assert_array_equal(value, state[key])
    checkpoint.save(model, tmp_path / "m.npz")
    other = nn.RecurrentClassifier(3, 4, 2, cell="gru", rng=2, dtype=np.float64)
    checkpoint.load(tmp_path / "m.npz", other)
    for key, value in other.state_dict().items():
        np.testing.assert_array_equal(value, state[key])
    assert_named_as_keys(other)


@pytest.mark.parametrize("clone", [copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))],
                         ids=["deepcopy", "pickle"])
def test_copies_keep_names_and_take_a_new_prefix(clone):
    model = nn.RecurrentClassifier(3, 4, 2, rng=0)
    twin = clone(model)
    assert_named_as_keys(twin)
    assert twin.rnn.weight_hh_l0 is not model.rnn.weight_hh_l0
    wrapper = nn.Module()
    wrapper.twin = twin
    assert twin.rnn.weight_hh_l0.name == "twin.rnn.weight_hh_l0"
    assert model.rnn.weight_hh_l0.name == "rnn.weight_hh_l0"
    assert_named_as_keys(wrapper)


def test_graph_drawing_shows_the_dotted_names():
    model = nn.MLP([2, 3, 1], rng=0)
    loss = model(ag.Tensor(np.ones((1, 2), dtype=np.float32))).sum()
    source = ag.to_dot(loss).source
    assert "layers.0.weight" in source and "layers.1.bias" in source
