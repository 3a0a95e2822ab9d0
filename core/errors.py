"""The one error a user can fix: every bad config value, data file, model name or run folder is a
ConfigError whose message is one line saying what is wrong and how to fix it. It sits at the bottom
of the package, so that any module can raise it without importing the config."""


class ConfigError(ValueError):
    """A configuration problem a user can fix; the message is one line that says how."""
