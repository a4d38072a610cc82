"""The errors a user can fix: each prints as one line, without a traceback."""


class UserError(Exception):
    """Bad input the user can correct; the message is the whole report."""


class ConfigError(UserError):
    """A config value of the wrong type or out of range."""


class DataError(UserError):
    """Data missing, truncated or not what it claims to be."""
