"""Subcommands of ``vsearch``; each module has ``register(subparsers)``."""
