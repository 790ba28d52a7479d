"""weft controller: a pure core (model, flows, pipeline) plus thin os-ken shims.

The core computes each switch's desired OpenFlow state as plain data; the
os-ken layer (``ofmsg`` and the app) only translates it to and from the wire.
"""
