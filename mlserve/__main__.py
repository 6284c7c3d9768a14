"""`python -m mlserve` entry point."""

from mlserve.cli import main

main()
