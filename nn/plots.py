"""Log-scale line plots for the diagnostics and the training job (matplotlib, optional)."""
import numpy as np


def log_plot(curves, path, xlabel, ylabel, title, bands=None, dashed=(), hlines=None,
             colors=None):
    """One line per label: `curves` maps a label to (x, y). Writes a PNG to `path`.
    bands: label -> (low, high), shaded around that label's line (a spread over runs);
    dashed: labels drawn dashed; hlines: label -> y of a dotted horizontal line;
    colors: label -> matplotlib colour (default: the next of the cycle).
    Raises ImportError with the install hint when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install matplotlib (or "
                          "pip install -e '.[plots]')") from None
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for label, (x, y) in curves.items():
        line, = ax.plot(x, _positive(y), label=label, linestyle="--" if label in dashed else "-",
                        color=(colors or {}).get(label))
        if bands and label in bands:
            low, high = bands[label]
            ax.fill_between(x, _positive(low), _positive(high), color=line.get_color(),
                            alpha=0.2, linewidth=0)
    for label, y in (hlines or {}).items():
        ax.axhline(y, color="grey", linestyle=":", label=label)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _positive(y):
    """A log axis has no place for zero or less: leave a gap there."""
    y = np.asarray(y, dtype=np.float64)
    return np.where(y > 0, y, np.nan)
