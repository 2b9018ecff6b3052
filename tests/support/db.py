"""Reading the test database: one scalar count of a query."""

from __future__ import annotations

import psycopg


def count(url: str, sql: str, *args: object) -> int:
    """The first column of the first row of `sql` (a count), as an int."""
    with psycopg.connect(url) as conn:
        row = conn.execute(sql, args).fetchone()
        assert row is not None
        return int(row[0])
