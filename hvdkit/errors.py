"""Errors a user can fix. The CLI prints their one-line message and exits with code 2."""


class UserError(Exception):
    """Bad input (recipe, flags, environment) that the user can fix; never a bug in hvdkit."""
