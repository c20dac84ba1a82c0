"""The one exception type for problems a user can fix: its message is printed as a single line."""


class InputError(Exception):
    """Bad input (image, weights, configuration); the message names the file and the problem."""
