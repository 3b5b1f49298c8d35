"""Shape templates checked against LXD before they are stored.

A template that names a missing image or profile would only fail later, when a
governor launches; checking at creation gives the admin the error instead.
"""

from __future__ import annotations

from ..errors import InvalidInput
from ..lxd import LXDAdapter
from ..models import InstanceTemplate

# Instance config keys the service writes itself to find its instances again.
INSTANCE_KEY_PREFIX = "user.lxd-deployments."


def apply_profile(lxd: LXDAdapter, project: str, template: InstanceTemplate,
                  profile_name: str) -> InstanceTemplate:
    """Copy a profile's config and devices into the template (the template's own win)."""
    profile = lxd.get_profile(project, profile_name)
    if profile is None:
        raise InvalidInput(f'Profile "{profile_name}" not found in project "{project}"')
    return template.model_copy(update={
        "config": {**profile.config, **template.config},
        "devices": {**profile.devices, **template.devices},
    })


def check_template(lxd: LXDAdapter, project: str, template: InstanceTemplate) -> None:
    """Refuse a template whose image or profiles do not exist in the deployment's project."""
    for key in template.config:
        if key.startswith(INSTANCE_KEY_PREFIX):
            raise InvalidInput(f'Instance config key "{key}" is reserved for the service')
    source = template.source
    if source.type == "image" and not source.is_remote:
        if not (source.alias or source.fingerprint):
            raise InvalidInput("A local image source needs an alias or a fingerprint")
        image_type = lxd.image_type(project, alias=source.alias,
                                    fingerprint=source.fingerprint)
        wanted = f'alias "{source.alias}"' if source.alias else \
            f'fingerprint "{source.fingerprint}"'
        if image_type is None:
            raise InvalidInput(f'Image with {wanted} not found in project "{project}"')
        if image_type != template.type:
            # LXD would only refuse at the first launch; the admin hears it now.
            raise InvalidInput(f'Image with {wanted} is a {image_type} image: a shape of '
                               f'type {template.type} cannot launch it')
    if source.type == "image" and source.is_remote and not (source.alias or source.fingerprint):
        raise InvalidInput("A remote image source needs an alias or a fingerprint")
    for profile in template.profiles or []:
        if lxd.get_profile(project, profile) is None:
            raise InvalidInput(f'Profile "{profile}" not found in project "{project}"')
