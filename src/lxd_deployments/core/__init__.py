"""The domain core: deployments, shapes, keys and the trust store, over the store and LXD.

No web framework here: the API layer parses requests into models, calls these
functions and maps their domain errors to responses.
"""

from .context import Core

__all__ = ["Core"]
