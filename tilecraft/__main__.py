"""`python -m tilecraft ...`: the same command line as `tilecraft ...`."""
import sys

from .cli import main

sys.exit(main())
