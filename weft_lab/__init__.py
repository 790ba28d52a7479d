"""weft-lab: a whole weft cluster on one machine, built from real parts.

Hosts are network namespaces running their own ovsdb-server and ovs-vswitchd
(userspace datapath), containers are namespaces on a docker0 Linux bridge, and
an underlay plus a management network join them inside a lab namespace.
"""
