"""The `bptt` command line: train, report, check, graph, bench (and a tiny demo).

    bptt train            a vanilla RNN and a GRU on the adding problem, 50 steps long
    bptt report           where BPTT's gradient comes from, step by step (note 003)
    bptt check            engine gradients vs the notes' hand-derived formulas
    bptt graph            draw an unrolled GRU and count its backprop paths (note 001)
    bptt bench            the speed comparisons
"""
import argparse
import os
import signal
import sys
import threading

import autograd_core as ag

from . import bench, check, demo, explore, graph, report, train
from .arguments import UsageError

# One module per subcommand, each with HELP, DESCRIPTION, EPILOG, add_arguments(parser) and
# run(args) -> exit code. A new subcommand is its module and one line here.
COMMANDS = {
    "train": train,
    "report": report,
    "check": check,
    "graph": graph,
    "explore": explore,
    "bench": bench,
    "demo": demo,
}
DEFAULT_COMMAND = "train"


class _Parser(argparse.ArgumentParser):
    """Parse errors become a UsageError (one line, exit 2) instead of argparse's exit."""

    def error(self, message):
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def build_parser():
    parser = _Parser(prog="bptt", description=__doc__, allow_abbrev=False,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, help=module.HELP, description=module.DESCRIPTION,
                           epilog=module.EPILOG, allow_abbrev=False,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


class Terminated(SystemExit):
    """SIGTERM, raised as an exception so that a run in progress removes its folder."""


def _on_sigterm(signum, frame):
    raise Terminated(128 + signum)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    # signal handlers can only be set from the main thread; elsewhere SIGTERM keeps its default
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    try:
        ag.tune_malloc()  # a command owns its process: let malloc keep freed arrays (see there)
        ag.tune_gc()  # and let the cycle collector skip most of the graph (see there)
        parser = build_parser()
        args = parser.parse_args(argv or [DEFAULT_COMMAND])
        if args.command is None:
            args = parser.parse_args([DEFAULT_COMMAND, *argv])
        return args.run(args)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: the shell already shows ^C; exit as it would expect
        return 130
    except Terminated as exc:
        return exc.code
    except BrokenPipeError:  # `bptt report | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
