"""weft per-host agent: keeps this host's br0, tunnels and docker0 link as hosts.yaml says."""

import warnings

# The ovs library imports eventlet when it is installed (os-ken pulls it in)
# and eventlet warns about itself on import; weft runs on native threads.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
