"""Scope names: which scope a write goes in and which scopes a read searches (--scope, else $MEMP_SCOPE, else default).

A scope is a namespace inside one store (a project, a team): recall searches only the scopes asked for, and
dedupe never merges across them. It is not access control: whoever can open the store reads every scope.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from .errors import ScopeError

DEFAULT = "default"
ALL = "*"  # read every scope
ENV = "MEMP_SCOPE"
PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_NAME = re.compile(PATTERN)


def check(name: str) -> str:
    """Return `name` when it is a scope name, else raise ScopeError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ScopeError(
            f"bad scope name {name!r}: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def write_scope(scope: str | None = None) -> str:
    """Return the scope a write goes in: `scope`, else $MEMP_SCOPE, else 'default'."""
    return check(scope or os.environ.get(ENV) or DEFAULT)


def read_scopes(scopes: str | Iterable[str] | None = None) -> list[str] | None:
    """Return the scopes a read searches (None: every scope, for '*'); none given means the write scope."""
    if isinstance(scopes, str):
        scopes = [scopes]
    names = list(dict.fromkeys(scopes or []))
    if not names:
        names = [os.environ.get(ENV) or DEFAULT]
    if ALL in names:
        return None
    return [check(name) for name in names]
