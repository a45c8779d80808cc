"""The one exception type users see: a message that names the culprit and what to do next."""


class DrivesimError(Exception):
    """A user-facing error. The CLI prints `str(error)` on one line and exits non-zero.

    Messages name the file, value or argument at fault and say what to do about it.
    """


class DataError(DrivesimError):
    """Input data (a dataroot, a table, an image, a map file) is missing or malformed."""


class ConfigError(DrivesimError):
    """An argument or configuration value is out of range or inconsistent."""
