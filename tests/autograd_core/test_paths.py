"""count_paths: backprop paths in the recorded graph, over every op and through named tensors,
with the numbers of source notes 000 (vanilla RNN) and 001 (GRU)."""
import numpy as np
import pytest

import autograd_core as ag
import nn
from autograd_core.graph import walk
from nn.diagnostics import step_states

GRU_NAMES = ["z", "r", "h~", "h"]


def test_x_times_x_has_two_paths():
    x = ag.Tensor([1.0, 2.0], requires_grad=True)
    y = x * x
    assert ag.count_paths(y, x) == 2
    assert ag.count_paths(y.sum(), x) == 2
    # Through no named tensor the two parallel edges are one route between the vertices.
    assert ag.count_paths(y, x, through=[]) == 1
    assert ag.count_paths(x, x) == 1


def test_diamond_and_exact_big_integers():
    x = ag.Tensor([0.5], requires_grad=True)
    a, b = ag.exp(x), ag.tanh(x)
    y = a * b + a                  # x->a->mul, x->b->mul, x->a->add
    assert ag.count_paths(y, x) == 3
    assert ag.count_paths(y, a) == 2 and ag.count_paths(y, b) == 1
    a.name = "a"
    assert ag.count_paths(y, x, through=["a"]) == 2     # y<-a<-x, and y<-(b, unnamed)<-x
    # 100 diamonds in a row: 2**100 paths, an exact Python int.
    h = x
    for _ in range(100):
        h = ag.tanh(h) + ag.sigmoid(h)
    n = ag.count_paths(h, x)
    assert n == 2 ** 100 and isinstance(n, int)


def test_errors():
    x = ag.Tensor([1.0], requires_grad=True)
    other = ag.Tensor([2.0], requires_grad=True)
    y = ag.tanh(x) * 3.0
    assert ag.count_paths(y, other) == 0            # not behind y: no path, not an error
    assert ag.count_paths(y, other, through="h") == 0
    with pytest.raises(TypeError, match="through"):
        ag.count_paths(y, x, through=[1.5])
    with pytest.raises(TypeError, match="through"):
        ag.count_paths(y, x, through=["h", 3])
    with pytest.raises(TypeError):
        ag.count_paths(y, x, through=5)
    with pytest.raises(TypeError, match="input must be a Tensor"):
        ag.count_paths(y, np.ones(1))
    with pytest.raises(TypeError, match="output must be a Tensor"):
        ag.count_paths(1.0, x)
    with pytest.raises(TypeError, match="input must be a Tensor or a non-empty list"):
        ag.count_paths(y, [])
    with pytest.raises(TypeError, match="input must be a Tensor or a list"):
        ag.count_paths(y, [x, "h"])
    y.backward(ag.Tensor([1.0]))
    with pytest.raises(RuntimeError, match="freed"):
        ag.count_paths(y, x)


def test_through_accepts_any_iterable_of_names_or_tensors():
    x = ag.Tensor([0.3], requires_grad=True)
    hs, h = [], x
    for _ in range(3):
        h = ag.tanh(h * 2.0)
        h.name = "h"
        hs.append(h)
    assert ag.count_paths(hs[-1], x, through="h") == 1
    assert ag.count_paths(hs[-1], x, through=hs) == 1
    assert ag.count_paths(hs[-1], x, through=("h",)) == 1
    # Natural spellings that name a tensor twice are still valid collections, not bad input.
    assert ag.count_paths(hs[-1], x, through=[t.name for t in hs]) == 1   # ["h", "h", "h"]
    assert ag.count_paths(hs[-1], x, through=hs + hs) == 1


def test_through_accepts_a_generator():
    x = ag.Tensor([0.3], requires_grad=True)
    a = ag.tanh(x)
    a.name = "a"
    y = a * a
    assert ag.count_paths(y, x, through=["a"]) == 1
    assert ag.count_paths(y, x, through=(n for n in ["a"])) == 1


# ----------------------------------------------------------------------------- note 001: GRU
def gru_states(T=4, H=3, seed=0):
    gru = nn.GRU(2, H, rng=seed)
    out, _ = gru(np.random.default_rng(seed).normal(size=(T, 2, 2)).astype(np.float32))
    return step_states(out)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_gru_paths_over_every_op_and_through_names(k):
    hs = gru_states(T=4)
    assert [h.name for h in hs] == ["h"] * 4 and [h.step for h in hs] == [0, 1, 2, 3]
    h_T, h_back = hs[-1], hs[-1 - k]
    assert ag.count_paths(h_T, h_back) == 5 ** k
    assert ag.count_paths(h_T, h_back, through=GRU_NAMES) == 4 ** k      # the note's 4, 16, 64


def test_gru_why_every_op_count_differs():
    # Note 001 draws one edge per gate: h_{t-1} reaches h_t through (1 - z) * h_{t-1}, through
    # z, through h~ and through r inside h~: 4 paths. In the recorded graph, however, z enters
    # h_t twice, once as (1 - z) * h_{t-1} and once as z * h~, so the route through z is two
    # edge-distinct paths: 1 (direct) + 2 (z) + 1 (h~) + 1 (r) = 5 over every op. Counting
    # through the named tensors contracts the two routes z -> h_t into one edge of the note's
    # picture, giving back 4.
    hs = gru_states(T=2)
    h_t, h_prev = hs[1], hs[0]
    step = {t.name: t for t in walk([h_t], "test") if t.step == 1 and t.name in GRU_NAMES}
    z, r, h_tilde = step["z"], step["r"], step["h~"]
    assert step["h"] is h_t
    assert ag.count_paths(h_t, z) == 2                       # (1 - z) * h and z * h~
    assert ag.count_paths(h_t, z, through=GRU_NAMES) == 1
    assert ag.count_paths(h_t, h_tilde) == 1 and ag.count_paths(h_t, r) == 1
    assert ag.count_paths(z, h_prev) == ag.count_paths(r, h_prev) == 1
    assert ag.count_paths(h_tilde, h_prev) == 2              # via r * h: through r and as h
    direct = 1
    assert ag.count_paths(h_t, h_prev) == direct + 2 * 1 + ag.count_paths(h_tilde, h_prev) == 5
    assert ag.count_paths(h_t, h_prev, through=GRU_NAMES) == 4


def test_gru_paths_from_the_loss():
    # With a loss on every step the counts compound; the recurrence is exact:
    # P(h_t) = (paths from the loss directly) + 5 * P(h_{t+1}).
    model = nn.RecurrentClassifier(2, 3, 2, cell="gru", rng=0)
    xs = np.random.default_rng(0).normal(size=(3, 1, 2)).astype(np.float32)
    logits, hidden, _ = model(xs)
    loss = nn.sequence_cross_entropy(logits, np.zeros((3, 1), dtype=np.int64))
    hs = step_states(hidden)
    assert [ag.count_paths(loss, h) for h in hs] == [1 + 5 * 6, 1 + 5, 1]
    assert [ag.count_paths(loss, h, through=GRU_NAMES) for h in hs] == [1 + 4 * 5, 1 + 4, 1]


# ----------------------------------------------------------------------------- note 000: RNN
def test_vanilla_rnn_paths_note_000():
    # S_t = tanh(U x_t + W S_{t-1} + b_a), L = L_1 + L_2 + L_3: S_3 reaches L only through
    # L_3, S_2 through L_2 and through S_3, S_1 through L_1, S_2 -> L_2 and S_2 -> S_3.
    model = nn.RecurrentClassifier(4, 5, 3, cell="rnn", rng=0)
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(3, 2, 4)).astype(np.float32)
    logits, hidden, _ = model(xs)
    loss = nn.sequence_cross_entropy(logits, rng.integers(0, 3, (3, 2)))   # L_1 + L_2 + L_3
    S1, S2, S3 = step_states(hidden)
    assert [S.name for S in (S1, S2, S3)] == ["h"] * 3
    for through in (None, "h", ["h"], [S1, S2, S3]):
        assert ag.count_paths(loss, S2, through=through) == 2
        assert ag.count_paths(loss, S1, through=through) == 3
        assert ag.count_paths(loss, S3, through=through) == 1
    assert ag.count_paths(S3, S1) == ag.count_paths(S3, S1, through="h") == 1
    # Parameters are shared by every step: W_hh reaches the loss once per step.
    assert ag.count_paths(loss, model.rnn.weight_hh_l0) == 3 + 2 + 1


def test_100k_node_chain():
    x = ag.Tensor(np.zeros(1), requires_grad=True)
    y, mid = x, None
    for i in range(100_000):
        y = y + y if i % 1000 == 0 else ag.tanh(y)    # 100 doublings of the path count
        if i == 50_000:
            mid = y
    assert ag.count_paths(y, x) == 2 ** 100
    assert ag.count_paths(y, mid) == 2 ** 49
    assert ag.count_paths(y, x, through=[]) == 1


# ------------------------------------------------------------- several tensors at once
def test_several_inputs_give_one_count_each_and_several_outputs_sum():
    x = ag.Tensor([0.5], requires_grad=True)
    a, b = ag.exp(x), ag.tanh(x)
    y, z = a * b + a, b * 2.0
    assert ag.count_paths(y, [x, a, b]) == [3, 2, 1]
    assert ag.count_paths(y, (b, x)) == [1, 3]
    assert ag.count_paths([y, z], [x, a, b]) == [3 + 1, 2, 1 + 1]
    assert ag.count_paths([y, z], x, through=[]) == 2   # one contracted route from each
    assert ag.count_paths([y, y], x) == 3               # an output named twice counts once


def test_exclusive_counts_between_two_states():
    # y <- a <- x, y <- x: exclusively from y to the state {a, x}, the path through a ends at a.
    x = ag.Tensor([0.5], requires_grad=True)
    a = ag.tanh(x)
    y = a * x
    assert ag.count_paths(y, [a, x]) == [1, 2]
    assert ag.count_paths(y, [a, x], exclusive=True) == [1, 1]
    # ... and from the state {y, a}, a path leaving y through a starts at a instead.
    assert ag.count_paths([y, a], x) == 2 + 1
    assert ag.count_paths([y, a], x, exclusive=True) == 2


def test_all_states_of_a_long_unroll_in_one_pass():
    # Every state of an 800-step GRU in one call: the same numbers as one call per state.
    hs = gru_states(T=800, H=2)
    counts = ag.count_paths(hs[-1], hs, through=GRU_NAMES)
    assert counts[-4:] == [64, 16, 4, 1]
    assert counts[0] == 4 ** 799
    assert ag.count_paths(hs[-1], hs)[-4:] == [125, 25, 5, 1]
    assert [ag.count_paths(hs[-1], h, through=GRU_NAMES) for h in hs[-4:]] == [64, 16, 4, 1]


# ------------------------------------------------------------- note 001: LSTM vs GRU
def lstm_states(T=4, H=3, seed=0):
    lstm = nn.LSTM(2, H, rng=seed)
    out, _ = lstm(np.random.default_rng(seed).normal(size=(T, 1, 2)).astype(np.float32))
    nodes = ag.walk_graph(out)
    hs = [t for t in nodes if t.name == "h"][::-1]
    cs = [t for t in nodes if t.name == "c"][::-1]
    assert [t.step for t in hs] == [t.step for t in cs] == list(range(T))
    return hs, cs


@pytest.mark.parametrize("through", [None, ["i", "f", "g", "o", "c", "h"]])
def test_lstm_has_24_paths_from_T_to_T_minus_2_where_the_gru_has_16(through):
    # Note 001: "from T back to T-2 the LSTM has 24 paths, the GRU only 16". One LSTM step:
    # h_t = o * tanh(c_t), c_t = f * c_{t-1} + i * g; o, f, i, g each read h_{t-1}. From the
    # state (h_t, c_t) back to (h_{t-1}, c_{t-1}): h_t -> o -> h_{t-1}, c_t -> f, i, g ->
    # h_{t-1}, c_t -> c_{t-1}: 4 + 1.
    hs, cs = lstm_states(T=4)
    state = [hs[-1], cs[-1]]
    assert ag.count_paths(state, [hs[-2], cs[-2]], through=through, exclusive=True) == [4, 1]
    h2, c2 = ag.count_paths(state, [hs[-3], cs[-3]], through=through, exclusive=True)
    assert (h2, c2) == (19, 5) and h2 + c2 == 24
    gru_h = gru_states(T=4)
    assert ag.count_paths(gru_h[-1], gru_h[-3], through=GRU_NAMES) == 16
