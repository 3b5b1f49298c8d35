"""Authentication and authorization of the service's callers.

- `caller.py`: `Caller` (admin | governor | anonymous; how it authenticated; its keys).
- `identify.py`: from a request's credentials (listener, client certificate, bearer
  token) to its `Caller`, read from the current store; `Authenticators.bearer` is where
  a bearer-token (JWT) authenticator plugs in.
- `jwt.py`: `JWTAuthenticator`, the bearer-token authenticator for governors (JWTs
  signed by the key of a trusted certificate of type `deployments`; imports PyJWT).
- `rules.py`: the authorization rules as plain functions.
- `middleware.py`: ASGI middleware resolving every request's caller (401 for anonymous
  callers off the public routes) and `ListenerApp`, which marks a server's requests.
- `dependencies.py`: FastAPI dependencies routes declare (admin, reader, writer).
- `tls.py`: the HTTPS server's TLS context (the trust store as CAs, reloaded) and the
  uvicorn protocol that passes the peer certificate to the app (imports uvicorn).
"""

from .caller import ADMIN, ANONYMOUS, GOVERNOR, Caller, Grant, Listener
from .identify import (
    Authenticators,
    BearerAuthenticator,
    Credentials,
    certificate_caller,
    identify,
)

__all__ = ["ADMIN", "ANONYMOUS", "GOVERNOR", "Authenticators", "BearerAuthenticator", "Caller",
           "Credentials", "Grant", "Listener", "certificate_caller", "identify"]
