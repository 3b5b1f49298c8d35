"""Access to LXD: the adapter protocol the core depends on, and its pylxd implementation."""

from .adapter import ClusterMember, EventHandler, LifecycleEvent, LXDAdapter, Profile
from .pylxd_adapter import PylxdAdapter, connect

__all__ = ["ClusterMember", "EventHandler", "LXDAdapter", "LifecycleEvent", "Profile",
           "PylxdAdapter", "connect"]
