"""weft's version: setup.cfg's `version`, read from the installed package's metadata.

One source: the daemons, weftctl and the API's /v1/health all report what pip installed,
so a host's `--version` says which wheel is on it, not a number copied into the code.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _installed

DISTRIBUTION = "weft-sdn"


def version() -> str:
    """The installed weft-sdn's version; "unknown" when run from a tree pip never installed."""
    try:
        return _installed(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"
