"""`python -m factory_cli` runs the CLI."""

from factory_cli.cli import main

main()
