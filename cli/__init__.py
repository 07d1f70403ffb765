"""Command-line entry points (`gradectl`)."""
