"""`python -m lxd_deployments`: the same as the `lxd-deployments` command."""

from lxd_deployments.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
