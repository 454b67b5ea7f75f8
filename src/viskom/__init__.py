"""viskom: quick-look monitor for the Euclid VIS camera."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("viskom")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
