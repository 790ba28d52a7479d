"""The warnings filter both daemons apply before they import os-ken or the ovs library.

The ovs library imports eventlet when it is installed (os-ken pulls it in) and eventlet
warns about itself on import; weft runs on native threads.  It lives here, in the
package both the controller and the agent import, so neither imports the other for it.
"""
from __future__ import annotations

import warnings


def quiet_eventlet() -> None:
    """Ignore eventlet's deprecation warning (idempotent)."""
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
