"""`python -m featsync` runs the CLI."""

from featsync.cli import main

main()
