"""The installed version, readable from any layer without importing the package root."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("headscope")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"
