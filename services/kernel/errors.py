"""Named domain errors and their HTTP meaning; the HTTP layer maps them to the one error shape.

They are defined in :mod:`services.kernel.model` (the stdlib-only module a domain may import) and
re-exported here for the rest of the kernel.
"""

from services.kernel.model import (  # noqa: F401 (re-exported)
    ConcurrencyError, Conflict, DomainError, Forbidden, NotFound, Unauthenticated,
)

__all__ = ["ConcurrencyError", "Conflict", "DomainError", "Forbidden", "NotFound", "Unauthenticated"]
