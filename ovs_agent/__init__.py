"""weft per-host agent: keeps this host's br0, tunnels and docker0 link as hosts.yaml says."""

from cluster.quiet import quiet_eventlet

quiet_eventlet()
