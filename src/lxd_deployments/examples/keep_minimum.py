"""An example governor: keep every shape of a deployment at its `scaling_minimum`.

Each round it reads the deployment's shapes and launches what each lacks (names
`<shape>-<6 hex digits>`), waiting for every launch; it never deletes anything. It
authenticates with its deployment key's certificate and private key: by JWT on the
in-instance socket (the default: inside a container where an admin ran
`lxd-deployments governor-socket add DEP INSTANCE`), or over HTTPS by JWT or mTLS.

    python -m lxd_deployments.examples.keep_minimum web --cert gov.crt --key gov.key
    python -m lxd_deployments.examples.keep_minimum web --cert gov.crt --key gov.key \\
        --url https://10.0.0.1:8443 --server-cert server.crt [--mtls] --once

With `--once` it runs one round, prints a JSON summary (`{"launched": [...], "failed":
[...]}`) and exits 1 if anything failed; otherwise it runs every `--interval` seconds
until interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

from lxd_deployments.client import DEFAULT_INSTANCE_SOCKET, ClientError
from lxd_deployments.governor_client import GovernorClient, instance_name_for


def keep_minimum(governor: GovernorClient, log: TextIO = sys.stderr) -> dict[str, list[Any]]:
    """One round: launch what each shape lacks to reach its minimum."""
    launched: list[str] = []
    failed: list[dict[str, str]] = []
    for shape in governor.shapes():
        name, missing = shape["name"], shape["scaling_minimum"] - shape["scaling_current"]
        for _ in range(max(missing, 0)):
            instance = instance_name_for(name)
            try:
                governor.launch(name, instance)
            except ClientError as err:
                failed.append({"shape": name, "instance": instance, "error": err.message})
                log.write(f"launch of {instance} ({name}) failed: {err.message}\n")
                break  # the next round tries again
            launched.append(instance)
            log.write(f"launched {instance} ({name}, minimum {shape['scaling_minimum']})\n")
    return {"launched": launched, "failed": failed}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keep_minimum", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("deployment", help="the deployment this key opens")
    parser.add_argument("--cert", required=True, help="the deployment key's certificate (PEM)")
    parser.add_argument("--key", required=True, help="its private key (PEM)")
    parser.add_argument("--project", help="the deployment's LXD project (default: default)")
    parser.add_argument("--socket", default=DEFAULT_INSTANCE_SOCKET,
                        help=f"the in-instance socket (default {DEFAULT_INSTANCE_SOCKET})")
    parser.add_argument("--url", help="HTTPS instead: https://HOST:PORT")
    parser.add_argument("--server-cert", help="the service's certificate to pin (HTTPS)")
    parser.add_argument("--mtls", action="store_true",
                        help="over HTTPS, authenticate with the client certificate, not JWT")
    parser.add_argument("--once", action="store_true", help="one round, then exit")
    parser.add_argument("--interval", type=float, default=30.0,
                        help="seconds between rounds (default 30)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.url:
            governor = GovernorClient.over_https(
                args.url, args.deployment, cert=args.cert, key=args.key,
                server_cert=args.server_cert or True, use_jwt=not args.mtls,
                project=args.project)
        else:
            governor = GovernorClient.over_socket(args.deployment, cert=args.cert,
                                                  key=args.key, socket_path=args.socket,
                                                  project=args.project)
    except ClientError as err:
        sys.stderr.write(f"Error: {err.message}\n")
        return 1
    with governor:
        try:
            while True:
                try:
                    summary = keep_minimum(governor)
                except ClientError as err:
                    summary = {"launched": [], "failed": [{"error": err.message}]}
                    sys.stderr.write(f"Error: {err.message}\n")
                if args.once:
                    print(json.dumps(summary))
                    return 1 if summary["failed"] else 0
                time.sleep(args.interval)
        except KeyboardInterrupt:
            return 130


if __name__ == "__main__":
    raise SystemExit(main())
