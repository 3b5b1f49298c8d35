"""The `lxd-deployments` command line: an `lxc`-like front end to the Deployments API."""
