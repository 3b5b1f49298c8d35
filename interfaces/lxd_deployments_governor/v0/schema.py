"""The databags of the `lxd-deployments-governor` interface, version 0 (every value a string).

Requirer (a governor charm): its leader writes the request in its application databag.
Provider (the lxd-deployments charm): its leader writes the outcome in the application
databag; every unit writes the outcome in its own service, with its endpoint and the
server certificate to pin, in its unit databag. Only public data: a governor's private
key never crosses the relation.
"""

from __future__ import annotations

from typing import Literal, Optional

from interface_tester.schema_base import DataBagSchema
from pydantic import BaseModel, ConfigDict, Field

_PEM = r"(?s)^-----BEGIN CERTIFICATE-----.+-----END CERTIFICATE-----\s*$"
_FINGERPRINT = r"^[0-9a-f]{64}$"


class _Bag(BaseModel):
    # Readers ignore keys they do not know (and Juju adds its own to unit databags).
    model_config = ConfigDict(extra="ignore")


class Request(_Bag):
    certificate: str = Field(pattern=_PEM, description="the governor's PEM certificate")
    deployment: str = Field(min_length=1, description="the deployment it governs")
    project: Optional[str] = Field(None, description='its LXD project (default "default")')
    role: Optional[Literal["rw", "ro"]] = Field(None, description='default "rw"')
    webhook_url: Optional[str] = Field(None, pattern=r"^https?://",
                                       description="where the deployment's events go")


class Outcome(_Bag):
    """Either a grant (deployment .. certificate_fingerprint) or an error, or nothing yet."""

    deployment: Optional[str] = None
    project: Optional[str] = None
    key_name: Optional[str] = Field(None, pattern=r"^juju-relation-[0-9]+$",
                                    description="named from the relation id, never the app")
    role: Optional[Literal["rw", "ro"]] = None
    certificate_fingerprint: Optional[str] = Field(None, pattern=_FINGERPRINT)
    error: Optional[str] = Field(None, description="why the request was refused")


class UnitOutcome(Outcome):
    endpoint: Optional[str] = Field(None, pattern=r"^https://",
                                    description="this unit's service: https://host:port")
    server_certificate: Optional[str] = Field(None, pattern=_PEM,
                                              description="the certificate to pin")


class RequirerSchema(DataBagSchema):
    app: Request


class ProviderSchema(DataBagSchema):
    app: Outcome
    unit: UnitOutcome
