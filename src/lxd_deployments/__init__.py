"""lxd-deployments: the LXD Deployments API as a service next to LXD."""

__version__ = "0.1.0"
