"""The `bptt` command's entry point (`python -m bptt`; `python -m nn` runs the same command line).

Ctrl-C ends the command quietly with exit code 130 at any time, start-up included. The command
line needs numpy and the engine, which take a few tenths of a second to import, and the package
`nn` imports them as it loads; so this entry point is a module of its own, outside `nn`, that
sets up the handling of Ctrl-C before anything heavy is imported.
"""
import signal
import sys

INTERRUPTED = 130  # what a shell reports for a command ended by Ctrl-C (128 + SIGINT)


class _DeferInterrupt:
    """While the command line imports, a first Ctrl-C is only noted (an interrupt inside
    numpy's import comes out as an ImportError with a traceback); a second one interrupts."""

    def __init__(self):
        self.pressed = 0

    def __call__(self, signum, frame):
        self.pressed += 1
        if self.pressed > 1:
            raise KeyboardInterrupt


def main(argv=None):
    defer = _DeferInterrupt()
    signal.signal(signal.SIGINT, defer)
    try:
        try:
            from nn.cli import main as command_line  # numpy, the engine, the subcommands
        except BaseException:
            if defer.pressed:
                return INTERRUPTED
            raise
        if defer.pressed:
            return INTERRUPTED
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the command handles it
        return command_line(argv)
    except KeyboardInterrupt:  # in the instants around the command's own handling of it
        return INTERRUPTED
    finally:
        # From here the process only exits: a late Ctrl-C ends it as the default would,
        # without a traceback from the interpreter's shutdown.
        signal.signal(signal.SIGINT, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
