"""The shared words of geobase, defined once: sharing levels, roles, ingest modes, name patterns.

Specs, the catalog, key management, the HTTP models, the CLI and the settings all check values
against these; a word added or renamed here is added or renamed everywhere (the catalog's
CHECK constraints in the migrations are the database's copy, written when the tables were made).
"""

from __future__ import annotations

import re
from typing import Literal

#: who may see a layer (see :mod:`geobase.security`), from the most to the least open
SharingLevel = Literal["public", "internal", "restricted", "private"]
SHARING_LEVELS: tuple[str, ...] = ("public", "internal", "restricted", "private")

#: the audiences an attribute can be hidden from (``hidden_from`` of a layer spec)
Audience = Literal["public", "internal"]
AUDIENCES: tuple[str, ...] = ("public", "internal")

#: the role of an API key; each role may do what the roles before it may (an editor changes
#: features of its department's layers, a steward also ingests whole deliveries)
Role = Literal["viewer", "analyst", "editor", "steward", "admin"]
ROLES: tuple[str, ...] = ("viewer", "analyst", "editor", "steward", "admin")
ROLE_RANK: dict[str, int] = {role: rank for rank, role in enumerate(ROLES)}

#: how an ingest changes a layer's rows (see ``ingest.pipeline``)
IngestMode = Literal["replace", "append", "upsert", "delete"]
INGEST_MODES: tuple[str, ...] = ("replace", "append", "upsert", "delete")

#: the name of a layer or of a department: a lowercase letter, then up to 62 lowercase letters,
#: digits or underscores — 1 to 63 characters, the length of a PostgreSQL identifier (a layer's
#: name is its table's name). ``{0,62}`` after the first letter, not ``{1,62}``: one letter is a
#: name, and 63 characters is the longest PostgreSQL keeps without truncating.
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
NAME_BODY = r"[a-z][a-z0-9_]{0,62}"   # the same, to embed in a longer pattern (no anchors)
NAME_RE = re.compile(NAME_PATTERN)


def is_name(value: object) -> bool:
    """True for a valid layer or department name (see :data:`NAME_PATTERN`)."""
    return isinstance(value, str) and NAME_RE.fullmatch(value) is not None
