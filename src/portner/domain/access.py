"""Who is asking: the signed-in person (or integration) and what their role lets them see.

Authority is role x organisation (the municipality) x relationship (the residents a nurse serves,
the one resident a relative belongs to). This module names the parts; `services.authority`
answers the questions against the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class AccountRole(StrEnum):
    NURSE = "nurse"  # home-care staff: today's visits, door keys on the phone
    OPERATOR = "operator"  # response center: live events, one-time access, revocation
    ADMIN = "admin"  # the municipality's administrator: residents, locks, staff, settings
    RELATIVE = "relative"  # sees one resident's door: who can open, who came
    RESIDENT = "resident"  # sees their own door
    INTEGRATION = "integration"  # the care record or a lock gateway, by client credentials


# What an integration may do, by OAuth scope.
SCOPE_FHIR_IMPORT = "portner.fhir.import"
SCOPE_EVENTS_UPLOAD = "portner.events.upload"
SCOPE_DIRECTORY_READ = "portner.directory.read"
INTEGRATION_SCOPES = frozenset({SCOPE_FHIR_IMPORT, SCOPE_EVENTS_UPLOAD, SCOPE_DIRECTORY_READ})

# Roles that see every resident of their municipality (organisation scope).
MUNICIPALITY_WIDE = frozenset({AccountRole.OPERATOR, AccountRole.ADMIN})
STAFF_ROLES = frozenset({AccountRole.NURSE, AccountRole.OPERATOR, AccountRole.ADMIN})


@dataclass(frozen=True, slots=True)
class Principal:
    """A signed-in account, as every request and service call sees it."""

    account_id: str
    municipality_id: str
    role: AccountRole
    actor_id: str | None = None
    resident_id: str | None = None
    display_name: str = field(default="", repr=False)
    scopes: frozenset[str] = frozenset()
    # "session" (web app cookie), "bearer" (OpenID access token) or "dev" (development sign-in).
    via: str = "session"

    @property
    def audit_actor(self) -> str:
        """How the audit log names this person: a pseudonymous account id, never a name."""
        return f"account:{self.account_id}"

    def has_scope(self, scope: str) -> bool:
        return self.role is not AccountRole.INTEGRATION or scope in self.scopes


class NotPermitted(PermissionError):
    """The principal may not see or do this. The message is safe to show to them."""
