"""viskom: quick-look monitor for the Euclid VIS camera."""

#: The version, written here once (pyproject.toml reads it): asking the installed metadata
#: for it costs every command ~40 ms of imports at start.
__version__ = "0.1.0"
