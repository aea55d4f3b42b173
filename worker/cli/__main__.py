"""`python -m worker.cli` runs the `segbench` command."""

from worker.cli import main

main()
