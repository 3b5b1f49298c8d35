"""Fixtures of LXD's own test suite for the Deployments API (test/suites/deployments.sh:
test_simple_deployment, test_deployment_shape, test_deployment_key), shared by the REST
and CLI versions of those scenarios.

One difference from LXD's script is deliberate: its shape edit sets config keys such as
`new.user.foo`, which this service refuses (only `user.*` keys are accepted, as the
contract says); the scenarios use `user.new-foo` instead and check the refusal.
"""

from __future__ import annotations

WEBHOOK = "http://0.0.0.0/scale"
NEW_WEBHOOK = "http://127.0.0.0/scale"

DEP5_YAML = f"""\
description: This is a test description for dep5
governor_webhook_url: {WEBHOOK}
config:
  user.foo: blah
  user.foo.bar: blah2
"""

DEP4_EDIT_YAML = f"""\
description: New description for dep4
governor_webhook_url: {WEBHOOK}
config:
  user.foo: blah2
  user.foo.bar: blah3
"""

SHAPE3_YAML = """\
description: This is a test description for shape3
scaling_minimum: 2
scaling_maximum: 8
config:
  user.foo: blah
  user.bar: blah2
"""

SHAPE3_EDIT_YAML = """\
description: New description for shape3
scaling_maximum: 8
config:
  user.new-foo: blah2
  user.new-foo.bar: blah3
"""

# The profile of LXD's test (a bridged NIC and a sized root disk, cloud-init user data).
TEST_PROFILE_YAML = """\
config:
  user.user-data: |
    #cloud-config
    packages:
      - htop
      - vim
    write_files:
      - content: |
          export VAR=VALUE
        path: /etc/environment
        permissions: '0644'
devices:
  eth0:
    name: eth0
    nictype: bridged
    parent: lxdbr0
    type: nic
  root:
    path: /
    pool: default
    type: disk
    size: 8GB
description: Test LXD Profile for a test deployment shape
"""

TEST_PROFILE_DEVICES = {
    "eth0": {"name": "eth0", "nictype": "bridged", "parent": "lxdbr0", "type": "nic"},
    "root": {"path": "/", "pool": "default", "type": "disk", "size": "8GB"},
}

DEP1_KEYS_YAML = f"""\
description: This is a test description for dep1
governor_webhook_url: {WEBHOOK}
config:
  user.foo: blah
  user.foo.bar: blah2
"""

KEY1_EDIT_YAML = """\
description: New description for key1
role: ro
"""
