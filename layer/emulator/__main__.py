"""`python -m layer.emulator`: run the emulator from the command line."""

from .cli import main

main()
