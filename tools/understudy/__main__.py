"""python -m understudy: the same as the `understudy` command."""
from understudy.cli import entry

entry()
