"""weft controller: a pure part (model, pipeline, flows, sync) and thin shells around it.

The pure part computes each switch's desired OpenFlow state as plain data and the delta
to send; the shells (the os-ken app with ``ofmsg``, the REST API in ``rest/``, the store
in ``store/``) only translate it to and from the wire.  ``core.Core`` is the one object
the shells share: the store, the cluster and what is known of each switch.
"""
