"""Progress of a training loop, with rate and time left (tqdm): a bar redrawn in place on a
terminal; off a terminal (CI, pipes, files) a plain line every tenth of the way, so logs stay
readable."""
import sys
import time

from tqdm import tqdm

_PLAIN = "{desc} step {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class Progress:
    def __init__(self, total, label, stream=None, lines=10):
        self.total, self.label = total, label
        self.stream = stream or sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = max(1, total // lines)
        self.start = time.perf_counter()
        self.bar = (tqdm(total=total, desc=label, file=self.stream, unit="step",
                         dynamic_ncols=True, leave=True) if self.tty else None)

    def update(self, step, **metrics):
        """Report that `step` (1-based) of `total` is done, with named metrics."""
        shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        if self.bar is not None:
            self.bar.set_postfix_str(shown, refresh=False)
            self.bar.update(step - self.bar.n)
            if step == self.total:
                self.bar.close()
            return
        if step % self.every and step != self.total:
            return
        line = tqdm.format_meter(step, self.total, time.perf_counter() - self.start,
                                 prefix=self.label, unit="step", bar_format=_PLAIN,
                                 postfix=shown)
        self.stream.write(line + "\n")
        self.stream.flush()

    def close(self):
        """End the bar early (an interrupted loop) so the terminal line is finished."""
        if self.bar is not None:
            self.bar.close()
