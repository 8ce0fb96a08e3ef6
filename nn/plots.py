"""Log-scale line plots for the diagnostics and the training job (matplotlib, optional)."""
import numpy as np


def log_plot(curves, path, xlabel, ylabel, title):
    """One line per label: `curves` maps a label to (x, y). Writes a PNG to `path`.
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
        y = np.asarray(y, dtype=np.float64)
        ax.plot(x, np.where(y > 0, y, np.nan), label=label)
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
