"""`python -m nn` runs the `bptt` command line. (It imports `nn`, and numpy with it, before
any of its code runs; the `bptt` command and `python -m bptt` handle a Ctrl-C from start-up on,
see bptt.py.)"""
import sys

from .cli import main

sys.exit(main())
