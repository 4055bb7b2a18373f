# Runs first on a board.  Keep it tiny: a mistake here can lock you out of
# the REPL.  The terminal itself starts in main.py.
import gc

gc.collect()
