"""User-facing errors: the CLI prints them as one line and exits non-zero, never with a traceback."""


class EcgkaError(Exception):
    """A problem with the user's input (file, column, value, option), worded for the user.

    The message should name what is wrong and where: ``"labevents.csv.gz: missing columns itemid, valuenum"``.
    """

    exit_code = 2


class InputError(EcgkaError):
    """Bad or missing input data (files, columns, values)."""


class ConfigError(EcgkaError):
    """An invalid configuration value or an unknown registered name."""
