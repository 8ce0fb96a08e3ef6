"""A small progress bar: redrawn in place on a terminal, plain periodic lines otherwise (CI,
pipes, files), so logs stay readable."""
import sys
import time


class Progress:
    def __init__(self, total, label, stream=None, lines=10, width=24):
        self.total, self.label, self.width = total, label, width
        self.stream = stream or sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = max(1, total // lines)
        self.start = time.perf_counter()

    def update(self, step, **metrics):
        """Report that `step` (1-based) of `total` is done, with named metrics."""
        if not self.tty and step % self.every and step != self.total:
            return
        shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        elapsed = time.perf_counter() - self.start
        if self.tty:
            done = int(self.width * step / self.total)
            bar = "#" * done + "-" * (self.width - done)
            self.stream.write(f"\r{self.label} [{bar}] {step}/{self.total}  {shown}  "
                              f"{elapsed:.0f}s ")
            if step == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(f"{self.label} step {step}/{self.total}  {shown}  "
                              f"{elapsed:.0f}s\n")
        self.stream.flush()
