"""BotArmy: an async server that runs an AI software-development team."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("botarmy")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
