"""The ``kokpit`` command."""
