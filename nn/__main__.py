"""`python -m nn` runs the `bptt` command line."""
import sys

from .cli import main

sys.exit(main())
