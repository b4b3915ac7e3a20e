"""`python -m layer` is the `layer` command."""

from layer.cli import main

main()
