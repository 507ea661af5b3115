"""Names written into Trino's access rules, quoted so they match only themselves.

Trino reads every `user`, `group` and `new_user` field of its file-based access rules
as a Java regular expression that must match the whole name. A name put there as it
is would be a pattern: `ptx.g` would also match `ptx-g`. Here each character outside
`[A-Za-z0-9_]` is preceded by a backslash, which Java (and Python) read as that
character itself; `\\Q…\\E` is not used, since a name containing `\\E` would end the
quote early.

Impersonation rules are different again: Trino first runs `new_user` through
`Matcher.appendReplacement` against the `original_user` match (so that `$1` can refer
to a group of it), which consumes one level of backslashes. `for_replacement` adds that
level back.
"""

from __future__ import annotations

from collections.abc import Iterable

# Matches no name at all: an alternation of nothing must not become "" (which matches
# the empty user) or ".*".
NOTHING = "(?!)"


def exact(name: str) -> str:
    """A regular expression that fully matches `name` and nothing else."""
    return "".join(c if c.isascii() and (c.isalnum() or c == "_") else "\\" + c for c in name)


def any_of(names: Iterable[str]) -> str:
    """A regular expression that fully matches exactly the given names."""
    quoted = sorted({exact(name) for name in names})
    if not quoted:
        return NOTHING
    return "|".join(quoted)


def for_replacement(pattern: str) -> str:
    """`pattern` as a replacement string of Java's `Matcher.appendReplacement`, which
    reads `\\x` as `x` and `$n` as a group: both are quoted so the pattern comes out
    unchanged (what `Matcher.quoteReplacement` does)."""
    return pattern.replace("\\", "\\\\").replace("$", "\\$")


def sql_string(value: str) -> str:
    """`value` as an SQL string literal (for row filters)."""
    return "'" + value.replace("'", "''") + "'"
