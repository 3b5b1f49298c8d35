"""The charm's workload code: everything the lxd-deployments charm does, without ops.

`src/charm.py` decides *when* (Juju events); the modules here say *how*: install the
service, render its config and systemd unit, reach it through its REST client, reconcile
the `deployments` option, provision governors' keys, scale shapes. Each is plain Python,
tested without Juju, and swapped out with one monkeypatch in the charm's tests.
"""
