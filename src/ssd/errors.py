"""Errors a user can act on. The CLI prints them as one line, without a traceback."""


class UserError(Exception):
    """A problem the user can fix: a bad argument, a file that does not fit, a broken dataset."""


class WeightsMismatchError(UserError):
    """A weights file that does not fit the model; the message lists every key or shape that differs."""


class DatasetError(UserError):
    """A dataset that cannot be used; the message names the file and the problem."""
