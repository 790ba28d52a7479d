"""The cluster description (hosts.yaml) that the controller and every agent share.

Both daemons import it, so they derive port names, datapath ids and MTUs the same way
without talking to each other.
"""
