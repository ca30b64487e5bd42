"""The package's error base: every error vs-vdf raises on purpose carries a message meant for the user."""


class VdfError(Exception):
    """A problem the message explains (bad input, a missing model, a path that cannot be written)."""
