"""``python -m fastopt_run_path runpy run_path FILE``: run FILE as __main__ (for tests under mpiexec)."""
import runpy
import sys

runpy.run_path(sys.argv[3], run_name="__main__")
