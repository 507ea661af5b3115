"""Schema DDL applied only when it changed.

Every schema of ours carries the digest of the DDL that built it as its comment. Callers
that run often (each transform run, each serving publish, each CLI command) then take
no table locks: ALTER TABLE locks its table exclusively even when it changes nothing,
and the registry's receipts and the run records are written all the time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql


def apply_when_changed(
    conn: psycopg.Connection[Any], schema: str, statements: Sequence[str]
) -> None:
    """Run `statements`, which create `schema`, unless these exact ones built it already.

    Call it inside a transaction, so the comment changes with what it describes."""
    stamp = "lakehouse ddl " + hashlib.sha256("\n".join(statements).encode()).hexdigest()
    current = conn.execute(
        "select obj_description(oid, 'pg_namespace') from pg_namespace where nspname = %s",
        (schema,),
    ).fetchone()
    if current is not None and current[0] == stamp:
        return
    for statement in statements:
        conn.execute(statement)
    conn.execute(
        sql.SQL("comment on schema {} is {}").format(sql.Identifier(schema), sql.Literal(stamp))
    )
