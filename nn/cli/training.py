"""The `bptt train` job: a vanilla RNN and a GRU on a long-range task, side by side.

With the defaults (the adding problem, 50 steps long) the GRU learns and the vanilla RNN stays
at the baseline: the gradient that would teach the RNN to carry the marked numbers across 50
steps has vanished on the way back (note 003), while the GRU's gates keep a path open.
"""
import dataclasses
import time

import numpy as np

import autograd_core as ag

from .. import checkpoint, diagnostics, optim, tasks
from ..clip import clip_grad_norm_
from ..layers import Linear
from ..module import Module
from ..recurrent import GRU, RNN

TASKS = ("adding", "remember")
MODELS = {"rnn": RNN, "gru": GRU}
OPTIMIZERS = ("adam", "sgd")


@dataclasses.dataclass
class TrainConfig:
    models: tuple = ("rnn", "gru")
    task: str = "adding"
    length: int = 50
    hidden: int = 32
    steps: int = 800
    batch: int = 32
    optimizer: str = "adam"
    lr: float = 0.01
    clip: float = 1.0
    seed: int = 0
    symbols: int = 4  # for the remember task


class SequenceModel(Module):
    """A recurrent layer and a linear read-out of its final state."""

    def __init__(self, cell, input_size, hidden, outputs, rng):
        super().__init__()
        self.rnn = MODELS[cell](input_size, hidden, rng=rng)
        self.out = Linear(hidden, outputs, rng=rng)

    def forward(self, xs):
        hidden, h_n = self.rnn(xs)
        return self.out(h_n[0]), hidden


def task_setup(cfg):
    """(batch maker, input size, output size, loss_and_accuracy, baseline description)."""
    if cfg.task == "adding":
        def make(batch, rng):
            return tasks.adding_problem(batch, cfg.length, rng)

        def score(pred, target):
            from ..losses import mse_loss
            pred = pred[:, 0]
            accuracy = float((np.abs(pred.numpy() - target) < 0.04).mean())
            return mse_loss(pred, target), accuracy
        return make, 2, 1, score, "loss 0.167 (always answering 1), accuracy ~0.07"

    def make(batch, rng):
        return tasks.remember_first(batch, cfg.length, cfg.symbols, rng)

    def score(logits, target):
        from ..losses import cross_entropy
        accuracy = float((logits.numpy().argmax(axis=1) == target).mean())
        return cross_entropy(logits, target), accuracy
    return make, cfg.symbols, cfg.symbols, score, f"accuracy {1 / cfg.symbols:.2f} (chance)"


def train_one(cell, cfg, progress=None):
    """Train one model; returns (model, optimizer, history dict of lists)."""
    make, n_in, n_out, score, _ = task_setup(cfg)
    rng = np.random.default_rng(cfg.seed)
    model = SequenceModel(cell, n_in, cfg.hidden, n_out, rng=cfg.seed)
    params = list(model.parameters())
    opt = (optim.Adam(params, lr=cfg.lr) if cfg.optimizer == "adam"
           else optim.SGD(params, lr=cfg.lr, momentum=0.9))
    history = {"loss": [], "accuracy": [], "grad_norm": []}
    for step in range(1, cfg.steps + 1):
        xs, target = make(cfg.batch, rng)
        pred, _ = model(xs)
        loss, accuracy = score(pred, target)
        opt.zero_grad()
        loss.backward()
        norm = clip_grad_norm_(params, cfg.clip) if cfg.clip > 0 else float("nan")
        opt.step()
        history["loss"].append(loss.item())
        history["accuracy"].append(accuracy)
        history["grad_norm"].append(norm)
        if progress is not None:
            window = slice(-50, None)
            progress.update(step, loss=np.mean(history["loss"][window]),
                            acc=np.mean(history["accuracy"][window]))
    return model, opt, history


def evaluate(model, cfg, batches=8):
    """Mean loss and accuracy on fresh data (a different seed from training)."""
    make, _, _, score, _ = task_setup(cfg)
    rng = np.random.default_rng(cfg.seed + 10_000)
    losses, accs = [], []
    with ag.no_grad():
        for _ in range(batches):
            xs, target = make(cfg.batch, rng)
            pred, _ = model(xs)
            loss, acc = score(pred, target)
            losses.append(loss.item())
            accs.append(acc)
    return float(np.mean(losses)), float(np.mean(accs))


def flow(model, cfg):
    """||dL/dh_t|| for each step t on one fresh batch (the gradient-flow diagnostic)."""
    make, _, _, score, _ = task_setup(cfg)
    xs, target = make(cfg.batch, np.random.default_rng(cfg.seed + 20_000))
    pred, hidden = model(xs)
    loss, _ = score(pred, target)
    return diagnostics.state_gradient_norms(loss, hidden)


def plot_losses(histories, path, title):
    """Running-mean loss curves of every model, log scale."""
    from ..plots import log_plot
    curves = {}
    for label, hist in histories.items():
        loss = np.asarray(hist["loss"])
        window = max(1, len(loss) // 40)
        curves[label] = (np.arange(window, len(loss) + 1),
                         np.convolve(loss, np.ones(window) / window, mode="valid"))
    return log_plot(curves, path, "training step", "loss (running mean)", title)


def run(cfg, out_dir, stream):
    """Train every model of cfg, write checkpoints, history and plots into out_dir; returns
    the summary rows."""
    _, _, _, _, baseline = task_setup(cfg)
    histories, flows, rows = {}, {}, []
    for cell in cfg.models:
        from .progress import Progress
        started = time.perf_counter()
        model, opt, hist = train_one(cell, cfg, Progress(cfg.steps, f"{cell:>4}", stream))
        seconds = time.perf_counter() - started
        loss, acc = evaluate(model, cfg)
        histories[cell], flows[cell] = hist, flow(model, cfg)
        checkpoint.save(model, out_dir / f"{cell}.npz", optimizer=opt)
        rows.append({"model": cell, "test loss": loss, "test accuracy": acc,
                     "|dL/dh_1| / |dL/dh_T|": flows[cell][0] / max(flows[cell][-1], 1e-300),
                     "seconds": seconds})
    np.savez(out_dir / "history.npz", **{f"{m}_{k}": np.asarray(v) for m, h in histories.items()
                                        for k, v in h.items()},
             **{f"{m}_grad_flow": f for m, f in flows.items()})
    plots = []
    try:
        title = f"{cfg.task} task, length {cfg.length}"
        plot_losses(histories, out_dir / "loss.png", title)
        diagnostics.plot_gradient_flow(flows, out_dir / "grad_flow.png",
                                       title=f"||dL/dh_t|| after training ({title})")
        plots = ["loss.png", "grad_flow.png"]
    except ImportError:
        stream.write("matplotlib is not installed: no plots (pip install matplotlib)\n")
    return rows, baseline, plots
