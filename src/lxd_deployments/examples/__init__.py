"""Example governors built on `lxd_deployments.governor_client` (run them with
`python -m lxd_deployments.examples.<name> --help`)."""
