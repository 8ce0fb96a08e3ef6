"""Real trainings that must reach a stated loss or accuracy (fixed seeds, a few seconds each)."""
import numpy as np
import pytest

import autograd_core as ag
import nn
from nn import optim, tasks


def _two_moons(n, rng):
    t = rng.uniform(0, np.pi, n)
    upper = np.stack([np.cos(t), np.sin(t)], axis=1)
    lower = np.stack([1 - np.cos(t), 0.5 - np.sin(t)], axis=1)
    labels = rng.integers(0, 2, n)
    points = np.where(labels[:, None] == 0, upper, lower) + rng.normal(0, 0.1, (n, 2))
    return points.astype(np.float32), labels


def test_mlp_fits_xor_with_the_notes_squared_error():
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([[0], [1], [1], [0]], dtype=np.float32)
    model = nn.MLP([2, 8, 1], activation="tanh", rng=0)
    opt = optim.Adam(model.parameters(), lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        loss = 0.5 * ((model(x) - y) ** 2).sum(axis=1).mean()  # E = 1/2 ||y - a||^2 (note 002)
        loss.backward()
        opt.step()
    assert loss.item() < 1e-3
    np.testing.assert_allclose(model(x).numpy(), y, atol=0.05)


def test_mlp_separates_two_moons():
    rng = np.random.default_rng(0)
    x, labels = _two_moons(256, rng)
    model = nn.MLP([2, 16, 16, 2], activation="tanh", rng=1)
    opt = optim.Adam(model.parameters(), lr=0.02)
    for _ in range(300):
        opt.zero_grad()
        loss = nn.cross_entropy(model(x), labels)
        loss.backward()
        opt.step()
    x_test, labels_test = _two_moons(256, rng)
    accuracy = (model(x_test).numpy().argmax(axis=1) == labels_test).mean()
    assert loss.item() < 0.05 and accuracy > 0.97


def _train_recall(cell, length, steps, seed=0, hidden=16, symbols=4):
    """Train on tasks.remember_first; return the accuracy on fresh sequences."""
    rng = np.random.default_rng(seed)
    model = nn.RecurrentClassifier(symbols, hidden, symbols, cell=cell, rng=seed)
    opt = optim.Adam(model.parameters(), lr=0.02)
    for _ in range(steps):
        xs, target = tasks.remember_first(32, length, symbols, rng)
        logits, _, _ = model(xs)
        loss = nn.cross_entropy(logits[-1], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    xs, target = tasks.remember_first(256, length, symbols, rng)
    with ag.no_grad():
        logits, _, _ = model(xs)
    return (logits[-1].numpy().argmax(axis=1) == target).mean()


def test_gru_learns_to_recall_the_first_symbol():
    assert _train_recall("gru", length=8, steps=150) > 0.95


def test_gru_learns_the_adding_problem():
    rng = np.random.default_rng(0)
    gru, head = nn.GRU(2, 16, rng=0), nn.Linear(16, 1, rng=0)
    params = list(gru.parameters()) + list(head.parameters())
    opt = optim.Adam(params, lr=0.02)
    for _ in range(250):
        xs, target = tasks.adding_problem(32, 10, rng)
        out, h_n = gru(xs)
        loss = nn.mse_loss(head(h_n[0])[:, 0], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    xs, target = tasks.adding_problem(256, 10, rng)
    with ag.no_grad():
        _, h_n = gru(xs)
        mse = nn.mse_loss(head(h_n[0])[:, 0], target).item()
    assert mse < 0.01  # predicting the mean scores about 0.167


def _chunked_epochs(cell, detach, epochs):
    """A long sequence in chunks of 5 steps, the hidden state carried across chunks; returns
    the mean loss of each epoch."""
    rng = np.random.default_rng(0)
    model = nn.RecurrentClassifier(3, 8, 3, cell=cell, rng=0)
    opt = optim.Adam(model.parameters(), lr=0.02)
    xs = rng.standard_normal((40, 4, 3)).astype(np.float32)
    targets = rng.integers(0, 3, (40, 4))
    means = []
    for _ in range(epochs):
        h, losses = None, []
        for start in range(0, 40, 5):
            logits, _, h = model(xs[start:start + 5], h)
            if detach:
                h = h.detach()  # truncated BPTT: the next chunk starts from a constant state
            loss = nn.sequence_cross_entropy(logits, targets[start:start + 5])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        means.append(np.mean(losses))
    return means


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_truncated_bptt_with_detach_trains_across_chunks(cell):
    means = _chunked_epochs(cell, detach=True, epochs=30)
    assert np.isfinite(means).all()
    assert means[-1] < 0.8 * means[0]


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_carrying_the_state_without_detach_is_caught(cell):
    with pytest.raises(RuntimeError, match=r"'h' \(recorded at time step 4\).*already freed by "
                                           r"backward #\d+, which released \d+ nodes.*"
                                           r"h = h.detach\(\).*retain_graph=True"):
        _chunked_epochs(cell, detach=False, epochs=1)
