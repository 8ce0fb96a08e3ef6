"""The `bptt train` job: a vanilla RNN and a GRU on a long-range task, side by side.

With the defaults (the adding problem, 50 steps long) the GRU learns and the vanilla RNN stays
at the baseline: the gradient that would teach the RNN to carry the marked numbers across 50
steps has vanished on the way back (note 003), while the GRU's gates keep a path open.

The story is told with figures that do not hang on one machine's rounding: the test loss (over
`seeds` runs), and the per-step decay of ||dL/dh_t|| fitted to its geometric mean over many
batches, at initialisation and during training (`nn.bptt_report` reads each batch's norms).
"""
import dataclasses
import json
import time

import numpy as np

import autograd_core as ag

from .. import checkpoint, optim, tasks
from ..bptt_report import bptt_report
from ..clip import clip_grad_norm_
from ..diagnostics import decay_rate
from ..layers import Linear
from ..module import Module
from ..recurrent import GRU, RNN

TASKS = ("adding", "remember")
MODELS = {"rnn": RNN, "gru": GRU}
OPTIMIZERS = ("adam", "sgd")
# Each task's length and learning rate, chosen so that the GRU learns it in the default steps
# with every seed tried (0-4), and the vanilla RNN stays at the adding problem's baseline (with
# lr 0.03 it wanders above it). With lr 0.01 the remember task stayed at chance for 800 steps,
# at length 20 as at 50.
TASK_DEFAULTS = {"adding": {"length": 50, "lr": 0.01}, "remember": {"length": 20, "lr": 0.03}}


@dataclasses.dataclass
class TrainConfig:
    models: tuple = ("rnn", "gru")
    task: str = "adding"
    length: int = None  # None: the task's default (TASK_DEFAULTS)
    hidden: int = 32
    steps: int = 400
    batch: int = 32
    optimizer: str = "adam"
    lr: float = None  # None: the task's default (TASK_DEFAULTS)
    clip: float = 1.0
    seed: int = 0
    seeds: int = 1  # runs per model, with seeds seed, seed + 1, ...
    symbols: int = 4  # for the remember task
    probe_every: int = 20  # training steps between two reads of ||dL/dh_t||
    init_batches: int = 8  # batches the decay at initialisation is averaged over

    def __post_init__(self):
        for name, value in TASK_DEFAULTS[self.task].items():
            if getattr(self, name) is None:
                setattr(self, name, value)


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
    return (make, cfg.symbols, cfg.symbols, score,
            f"loss {baseline_loss(cfg):.3g}, accuracy {1 / cfg.symbols:.2f} (chance)")


def baseline_loss(cfg):
    """The loss of the best answer that ignores the sequence: the mean for the adding problem
    (the variance of a sum of two uniform numbers, 1/6), chance for the remember task."""
    return 1 / 6 if cfg.task == "adding" else float(np.log(cfg.symbols))


def train_one(cell, cfg, progress=None, seed=None):
    """Train one model from `seed` (default cfg.seed); returns (model, optimizer, history).
    history: per training step "loss", "accuracy", "grad_norm"; "probe_steps" and
    "state_grad_norms" (probes, T): ||dL/dh_t|| of the batch of every probe_every-th step,
    read before that step's update."""
    seed = cfg.seed if seed is None else seed
    make, n_in, n_out, score, _ = task_setup(cfg)
    rng = np.random.default_rng(seed)
    model = SequenceModel(cell, n_in, cfg.hidden, n_out, rng=seed)
    params = list(model.parameters())
    opt = (optim.Adam(params, lr=cfg.lr) if cfg.optimizer == "adam"
           else optim.SGD(params, lr=cfg.lr, momentum=0.9))
    history = {"loss": [], "accuracy": [], "grad_norm": [], "probe_steps": [],
               "state_grad_norms": []}
    probe_every = min(cfg.probe_every, cfg.steps)  # a short run still gets one probe
    for step in range(1, cfg.steps + 1):
        xs, target = make(cfg.batch, rng)
        pred, hidden = model(xs)
        loss, accuracy = score(pred, target)
        if step % probe_every == 0:  # the report keeps the graph for the backward below
            history["probe_steps"].append(step)
            history["state_grad_norms"].append(
                bptt_report(loss, model, hidden).state_grad_norms)
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


def evaluate(model, cfg, batches=8, seed=None):
    """Mean loss and accuracy on fresh data (a different seed from training)."""
    make, _, _, score, _ = task_setup(cfg)
    rng = np.random.default_rng((cfg.seed if seed is None else seed) + 10_000)
    losses, accs = [], []
    with ag.no_grad():
        for _ in range(batches):
            xs, target = make(cfg.batch, rng)
            pred, _ = model(xs)
            loss, acc = score(pred, target)
            losses.append(loss.item())
            accs.append(acc)
    return float(np.mean(losses)), float(np.mean(accs))


def initial_gradient_norms(cell, cfg, seed=None):
    """||dL/dh_t|| of the untrained model of `seed` on cfg.init_batches fresh batches
    (init_batches, T)."""
    seed = cfg.seed if seed is None else seed
    make, n_in, n_out, score, _ = task_setup(cfg)
    model = SequenceModel(cell, n_in, cfg.hidden, n_out, rng=seed)
    rng = np.random.default_rng(seed + 20_000)
    rows = []
    for _ in range(cfg.init_batches):
        xs, target = make(cfg.batch, rng)
        pred, hidden = model(xs)
        rows.append(bptt_report(score(pred, target)[0], model, hidden).state_grad_norms)
    return np.array(rows)


def decay_profile(norms):
    """The geometric mean over batches (all leading axes) of ||dL/dh_t||, divided by its value
    at the last step, and the per-step factor fitted to it. Averaging the logs keeps one
    batch's extremes from ruling; an underflowed norm counts as the smallest float32."""
    logs = np.log(np.maximum(np.asarray(norms, dtype=np.float64), np.finfo(np.float32).tiny))
    mean = logs.reshape(-1, logs.shape[-1]).mean(axis=0)
    profile = np.exp(mean - mean[-1])
    return profile, decay_rate(profile) if len(profile) > 1 else float("nan")


def run(cfg, out_dir, stream):
    """Train every model of cfg over cfg.seeds seeds; write checkpoints (of the first seed),
    history and plots into out_dir; returns (summary rows, baseline text, plot names)."""
    from .progress import Progress
    _, _, _, _, baseline = task_setup(cfg)
    seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))
    results, rows = {}, []
    with _one_blas_thread():
        for cell in cfg.models:
            runs = []
            for seed in seeds:
                label = cell if len(seeds) == 1 else f"{cell} seed {seed}"
                started = time.perf_counter()
                progress = Progress(cfg.steps, label, stream)
                try:
                    model, opt, hist = train_one(cell, cfg, progress, seed=seed)
                finally:  # an interrupted run still ends the bar's line
                    progress.close()
                hist["init_state_grad_norms"] = initial_gradient_norms(cell, cfg, seed)
                hist["seconds"] = time.perf_counter() - started
                hist["test_loss"], hist["test_accuracy"] = evaluate(model, cfg, seed=seed)
                if seed == cfg.seed:
                    checkpoint.save(model, out_dir / f"{cell}.npz", optimizer=opt)
                runs.append(hist)
            results[cell] = runs
            rows.append(_summary(cell, runs))
    _save_history(results, out_dir / "history.npz")
    save_config(cfg, out_dir / CONFIG_FILE)
    plots = []
    try:
        _plot(results, cfg, out_dir)
        plots = ["loss.png", "grad_flow.png"]
    except ImportError:
        stream.write("matplotlib is not installed: no plots (pip install matplotlib)\n")
    return rows, baseline, plots


CONFIG_FILE = "config.json"  # the run's TrainConfig: `bptt report --checkpoint` reads the length


def save_config(cfg, path):
    path.write_text(json.dumps(dataclasses.asdict(cfg), indent=1) + "\n")


def saved_length(folder):
    """The sequence length the run in `folder` trained on, or None where it did not record
    one (a folder from before config.json, or not a run folder)."""
    try:
        length = json.loads((folder / CONFIG_FILE).read_text()).get("length")
    except (OSError, ValueError, AttributeError):
        return None
    return length if type(length) is int and length > 0 else None


def _one_blas_thread():
    """numpy's BLAS threads fight over these small matrices: on 2 busy cores numpy's two
    threads made the job 2-3x slower than one (and 4x the CPU time), so it runs on one."""
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=1, user_api="blas")


def _summary(cell, runs):
    init = decay_profile([h["init_state_grad_norms"] for h in runs])[1]
    during = decay_profile([h["state_grad_norms"] for h in runs])[1]
    return {"model": cell,
            "test loss": _spread([h["test_loss"] for h in runs]),
            "test accuracy": _spread([h["test_accuracy"] for h in runs]),
            "decay/step at init": init, "decay/step in training": during,
            "seconds": _spread([h["seconds"] for h in runs])}


def _spread(values):
    """One value as is; several as 'median [min, max]'."""
    if len(values) == 1:
        return values[0]
    return f"{np.median(values):.4g} [{min(values):.4g}, {max(values):.4g}]"


def _save_history(results, path):
    """Arrays per model, a leading axis over seeds: <model>_loss (seeds, steps), ...,
    <model>_state_grad_norms (seeds, probes, T), <model>_init_state_grad_norms
    (seeds, init_batches, T), <model>_test_loss (seeds,)."""
    arrays = {}
    for cell, runs in results.items():
        for key in runs[0]:
            arrays[f"{cell}_{key}"] = np.array([h[key] for h in runs])
    np.savez(path, **arrays)


def _plot(results, cfg, out_dir):
    """loss.png: each model's running-mean loss (median over seeds, shaded from min to max)
    against the baseline; grad_flow.png: each model's decay profile, dashed at initialisation,
    solid in training."""
    from ..plots import log_plot
    seeds = len(next(iter(results.values())))
    title = f"{cfg.task} task, length {cfg.length}" + (f", {seeds} seeds" if seeds > 1 else "")
    colors = {cell: f"C{i}" for i, cell in enumerate(results)}
    curves, bands = {}, {}
    for cell, runs in results.items():
        loss = np.array([h["loss"] for h in runs])
        window = max(1, loss.shape[1] // 40)
        smooth = np.array([np.convolve(r, np.ones(window) / window, mode="valid")
                           for r in loss])
        curves[cell] = (np.arange(window, loss.shape[1] + 1), np.median(smooth, axis=0))
        if seeds > 1:
            bands[cell] = (smooth.min(axis=0), smooth.max(axis=0))
    ylabel = "loss (running mean" + (", median and range)" if seeds > 1 else ")")
    log_plot(curves, out_dir / "loss.png", "training step", ylabel, title, bands=bands,
             hlines={"baseline": baseline_loss(cfg)}, colors=colors)

    curves, dashed, line_colors = {}, [], {}
    t = np.arange(1, cfg.length + 1)
    for cell, runs in results.items():
        for when, key in (("at init", "init_state_grad_norms"),
                          ("in training", "state_grad_norms")):
            profile, rate = decay_profile([h[key] for h in runs])
            label = f"{cell} {when} ({rate:.3g}/step)"
            curves[label], line_colors[label] = (t, profile), colors[cell]
            if when == "at init":
                dashed.append(label)
    log_plot(curves, out_dir / "grad_flow.png", "time step t", "||dL/dh_t|| / ||dL/dh_T||",
             f"Gradient per step, geometric mean over batches\n{title}", dashed=dashed,
             colors=line_colors)
