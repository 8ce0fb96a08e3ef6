"""The notes-level view (view="notes" / "rolled" of ag.to_dot): note 000's picture of an nn
RNN, and the GRU and LSTM drawn per gate, from recorded graphs."""
import re
import struct

import numpy as np
import pytest

import autograd_core as ag
import nn
from autograd_core import notes_view
from autograd_core.graph import walk
from autograd_core.viz import GraphTooLargeError, notes_of


def classifier_loss(cell, T, weights=None, seed=0):
    model = nn.RecurrentClassifier(2, 3, 2, cell=cell, rng=seed, dtype=np.float64)
    rng = np.random.default_rng(seed)
    logits, _, _ = model(rng.standard_normal((T, 1, 2)))
    loss = nn.sequence_cross_entropy(logits, rng.integers(0, 2, (T, 1)), step_weights=weights)
    return model, loss


def notes(cell, T, weights=None):
    model, loss = classifier_loss(cell, T, weights)
    _, ng = notes_of(walk([loss], "test"), [loss], model)
    labels = {n.ident: n.label for n in ng.nodes.values()}
    edges = {(labels[a], labels[b]): w for a, b, w in ng.edges}
    return ng, set(labels.values()), edges


def test_rnn_three_steps_is_note_000s_picture():
    ng, labels, edges = notes("rnn", 3, weights=(0.1, 0.1, 0.8))
    assert ng.cell == "rnn" and ng.steps == 3
    steps = {f"{s}_{t}" for s in ("x", "S", "y", "L") for t in (1, 2, 3)}
    assert labels == steps | {"S_0", "L", "U", "W", "b_a", "V", "b_y"}   # one bias b_a
    for t in (1, 2, 3):
        for p in ("U", "W", "b_a"):                  # shared parameters fan into every step
            assert (p, f"S_{t}") in edges
        assert ("V", f"y_{t}") in edges and ("b_y", f"y_{t}") in edges
        assert (f"x_{t}", f"S_{t}") in edges and (f"S_{t - 1}", f"S_{t}") in edges
        assert (f"S_{t}", f"y_{t}") in edges and (f"y_{t}", f"L_{t}") in edges
    # note 000's weights on the L_t edges
    assert [edges[(f"L_{t}", "L")] for t in (1, 2, 3)] == ["0.1", "0.1", "0.8"]
    assert ("U", "y_1") not in edges and ("x_1", "S_2") not in edges
    # U, W, b_a -> S_t; V, b_y -> y_t; x_t -> S_t, S_{t-1} -> S_t, S_t -> y_t, y_t -> L_t, L_t -> L
    assert len(edges) == 3 * 3 + 3 * 2 + 3 * 5


def test_gru_per_gate_and_lstm_state_pair():
    ng, labels, edges = notes("gru", 4)
    assert ng.cell == "gru" and ng.steps == 4
    gates = {"W_xr\\nW_hr\\nb_r", "W_xz\\nW_hz\\nb_z", "W_xh\\nW_hh\\nb_h"}
    assert gates <= labels and "bias_ih_l0" not in "".join(labels)
    for t in (1, 2, 3, 4):
        prev = f"h_{t - 1}"
        for gate in ("r", "z", "h~"):
            assert (prev, f"{gate}_{t}") in edges            # h_{t-1} into every gate
        assert (prev, f"h_{t}") in edges                     # (1 - z) * h_{t-1}
        assert ("W_xr\\nW_hr\\nb_r", f"r_{t}") in edges
        assert (f"r_{t}", f"h~_{t}") in edges and (f"z_{t}", f"h_{t}") in edges
    assert all(w == "" for w in edges.values())             # no weights given: no labels
    ng, labels, edges = notes("lstm", 2)
    assert ng.cell == "lstm" and {"C_0", "h_0", "C_1", "C_2"} <= labels
    assert ("C_1", "C_2") in edges and ("C_2", "h_2") in edges and ("o_2", "h_2") in edges


def test_hand_written_loop_with_names_and_steps():
    # A student's loop: the tensors the student names are the picture.
    rng = np.random.default_rng(0)
    W = ag.Tensor(rng.normal(size=(2, 2)), requires_grad=True, name="W")
    s, loss = ag.Tensor(np.zeros(2), name="S_0"), 0.0
    for t in range(2):
        with ag.step_scope(t):
            s = ag.tanh(W @ s + 1.0)
            s.name = "S"
        loss = loss + s.sum()
    _, ng = notes_of(walk([loss], "test"), [loss])
    labels = {n.label for n in ng.nodes.values()}
    assert labels == {"W", "S_0", "S_1", "S_2", "L"}


def test_to_dot_views_and_the_step_limit():
    model, loss = classifier_loss("gru", 3)
    source = ag.to_dot(loss, params=model, view="notes").source
    assert "W_xz" in source and "weight_ih" not in source
    rolled = ag.to_dot(loss, params=model, view="rolled").source
    assert "t = 1 .. 3  (x T)" in rolled and "h_t-1" in rolled and "h_3" not in rolled
    with pytest.raises(ValueError, match="view must be one of"):
        ag.to_dot(loss, view="pretty")
    model, loss = classifier_loss("rnn", 40)
    with pytest.raises(GraphTooLargeError, match="rolled"):
        ag.to_dot(loss, params=model, view="notes")
    rolled = ag.to_dot(loss, params=model, view="rolled").source
    assert "L (sum over T = 40)" in rolled
    labels = set(re.findall(r'label="?([^"\]\s]+)', rolled))
    assert {"S_t", "x_t", "y_t", "L_t", "U", "W", "V"} <= labels and "S_2" not in labels


def test_show_grad_norms_match_the_engine():
    model, loss = classifier_loss("rnn", 3)
    source = ag.to_dot(loss, params=model, view="notes", show_grad=True).source
    (w_grad,) = ag.grad(loss, [model.rnn.weight_hh_l0], retain_graph=True)
    assert f"W\\n|grad| {np.linalg.norm(w_grad.numpy()):.3g}" in source


def test_per_step_copies_show_their_steps_gradient():
    # y_t and L_t are copies of one (T, ...) tensor each; copy t shows the norm of slice t
    model, loss = classifier_loss("rnn", 3, weights=(0.1, 0.1, 0.8))
    source = ag.to_dot(loss, params=model, view="notes", show_grad=True).source
    logits = next(t for t in ag.walk_graph(loss) if t.name == "y")
    (g,) = ag.grad(loss, [logits], retain_graph=True)
    for t, w in enumerate((0.1, 0.1, 0.8), start=1):
        assert f"L_{t}\\n|grad| {w:.3g}" in source
        assert f"y_{t}\\n|grad| {np.linalg.norm(g.numpy()[t - 1]):.3g}" in source
    rolled = ag.to_dot(loss, params=model, view="rolled", show_grad=True).source
    assert "(x T)\\n|grad| at t = 3" in rolled and "L_t\\n|grad| 0.8" in rolled
    assert "|grad| at" not in ag.to_dot(loss, params=model, view="rolled").source


def png_size(path):
    with open(path, "rb") as f:
        return struct.unpack(">II", f.read(24)[16:24])


@pytest.mark.parametrize("cell, T", [("rnn", 3), ("gru", 4)])
def test_fits_a_screen(dot_program, tmp_path, cell, T):
    model, loss = classifier_loss(cell, T, weights=(0.1, 0.1, 0.8) if T == 3 else None)
    path = ag.render(loss, tmp_path / "g.png", format="png", params=model, view="notes",
                     show_grad=True)
    width, height = png_size(path)
    assert 300 < width <= 2000 and height <= 1200


def test_rolled_view_of_a_long_unroll(dot_program, tmp_path):
    model, loss = classifier_loss("gru", 300)
    path = ag.render(loss, tmp_path / "g.svg", params=model, view="rolled")
    svg = path.read_text()
    assert "(x T)" in svg and "z_t" in svg and "z_2" not in svg
