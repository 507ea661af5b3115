"""Strict patterns for every name that reaches a URL, a file path or SQL.

Run ids, Nessie branches, Trino catalogs, namespaces and device, tenant and site ids
come from users and devices. Each is checked here before it is used, so a name such
as `x/../dev` can never address another Nessie branch or escape a quoted identifier.
"""

from __future__ import annotations

import re

from lakehouse.errors import InvalidNameError

PATTERNS: dict[str, re.Pattern[str]] = {
    # Transform runs: 20261202_143000_a1b2c3.
    "run id": re.compile(r"^[0-9]{8}_[0-9]{6}_[0-9a-f]{6}$"),
    # Nessie references: letters, digits and _ . - (no slash, so no path tricks).
    "branch": re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]|\.(?!\.)){0,127}$"),
    "catalog": re.compile(r"^[a-z][a-z0-9_]{0,62}$"),
    "namespace": re.compile(r"^[a-z][a-z0-9_]{0,62}$"),
    "table": re.compile(r"^[a-z][a-z0-9_]{0,127}$"),
    # Devices, tenants and sites: what a person types, and what fits a URL segment.
    "device id": re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"),
    "tenant": re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"),
    "site": re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"),
    # Trino principals and Superset users: they appear in Trino's password, group and
    # rules files. A separator stands between two letters or digits, never doubled.
    "principal": re.compile(r"^[a-z](?:[a-z0-9]|[._-](?=[a-z0-9])){0,62}$"),
}
_SEPARATORS = re.compile(r"[._-]")


def checked(kind: str, value: str) -> str:
    """`value` if it matches the pattern for `kind`; InvalidNameError otherwise."""
    pattern = PATTERNS[kind]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidNameError(
            f"invalid {kind} {value!r}",
            fix=f"a {kind} must match {pattern.pattern}",
        )
    return value


def principal_key(name: str) -> str:
    """What two principal names must not share: `ptx.g`, `ptx-g` and `ptx_g` read alike
    to people, and to any tool that treats a name as a pattern or normalises it, so
    only one of them may exist."""
    return _SEPARATORS.sub("-", name)
