"""The caller of a request or a command: the public, or the holder of an API key.

Its own module so that everything that records or checks who acts (the audit log, key
checking, the access rules of :mod:`geobase.security`) depends on it, and none of them on each
other. The roles are those of :mod:`geobase.vocab`.
"""

from __future__ import annotations

from dataclasses import dataclass

from geobase.vocab import ROLE_RANK, Role


@dataclass(frozen=True)
class Principal:
    """The caller: the public (no key) or the holder of an API key of a department and role."""

    name: str = "public"
    department: str | None = None
    role: Role | None = None
    key_id: str | None = None
    #: the datasets an approved request's key is limited to (:mod:`geobase.catalog.requests`);
    #: None: a department's or admin's key, limited by sharing levels only
    scope: frozenset[str] | None = None
    #: the download formats such a key was granted (None or empty: any); see
    #: :func:`geobase.security.require_format`
    formats: frozenset[str] | None = None
    #: the box (minx, miny, maxx, maxy in CGCS2000/CRS84 degrees) such a key was granted: it reads
    #: nothing outside it (:func:`geobase.security.scope_bbox`); None: no box
    bbox: tuple[float, float, float, float] | None = None

    @property
    def is_public(self) -> bool:
        return self.key_id is None

    @property
    def is_outside(self) -> bool:
        """A caller from outside the government: no key, or an approved request's key. Outside
        callers get the desensitised data of an openness class (:func:`geobase.security.hidden_attributes`)."""
        return self.key_id is None or self.scope is not None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def has_role(self, role: Role) -> bool:
        return self.role is not None and ROLE_RANK[self.role] >= ROLE_RANK[role]


#: the caller without a key
PUBLIC = Principal()
