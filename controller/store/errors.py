"""The store's refusals: one typed error per HTTP answer, naming the offending field.

The model refuses bad values with ``ModelError``; ``model_values`` is the one place
that turns those into the store's family, so callers of the store see only these.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from controller.model import ModelError, PortOwned


class StoreError(Exception):
    status = 400

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


class NotFound(StoreError):
    status = 404


class Conflict(StoreError):
    status = 409


class InUse(Conflict):
    """Refused while ports are bound to it: ``ports`` lists them (host, port, mac, ips,
    source), so the answer says which containers to remove, and where."""

    def __init__(self, field: str, message: str, ports: list[dict]) -> None:
        super().__init__(field, message)
        self.ports = ports


class Invalid(StoreError):
    status = 422


class Unavailable(StoreError):
    """The storage cannot serve the request now (read-only, full, damaged): 503."""
    status = 503


class StoreFileError(Exception):
    """The store cannot be used at all; weft-manager prints it and exits 2."""


@contextmanager
def model_values(field: str, prefix: str = "") -> Iterator[None]:
    """Build or check model values inside: a ModelError becomes Invalid naming its field
    (Conflict for a port weft owns); another ValueError or TypeError (a value of the
    wrong shape) becomes Invalid naming ``field``.  ``prefix`` goes before the field
    (an item of a list: ``"3."``)."""
    try:
        yield
    except PortOwned as exc:
        raise Conflict(prefix + exc.field, exc.message) from None
    except ModelError as exc:
        raise Invalid(prefix + exc.field, exc.message) from None
    except (ValueError, TypeError) as exc:
        raise Invalid(prefix + field, str(exc)[:200]) from None
