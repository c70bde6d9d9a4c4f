"""Command-line interface: ``expertir <command>``; one module per command."""
