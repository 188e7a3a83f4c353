"""psycopg2 against runnel: DDL, executemany, typed fetches, NULLs, a named
(server-side) cursor, errors keep the session.

Usage: psycopg2_basics.py PORT. Exits non-zero with a message on a mismatch.
"""

import datetime
import sys
from decimal import Decimal

import psycopg2
import psycopg2.errors


def expect(actual, expected, what):
    if actual != expected or type(actual) is not type(expected):
        sys.exit(f"FAIL {what}: got {actual!r} ({type(actual).__name__}), "
                 f"want {expected!r} ({type(expected).__name__})")
    print(f"ok   {what}")


def main(port):
    conn = psycopg2.connect(host="127.0.0.1", port=port, user="runnel",
                            dbname="runnel", connect_timeout=30)
    cur = conn.cursor()
    cur.execute("CREATE TABLE t (i INT, b BIGINT, f DOUBLE PRECISION, "
                "d NUMERIC(10, 2), ok BOOLEAN, s TEXT, ts TIMESTAMP)")
    ts = datetime.datetime(2024, 1, 2, 3, 4, 5)
    rows = [
        (1, 10_000_000_000, 1.5, Decimal("12.34"), True, "one", ts),
        (2, -3, -0.25, Decimal("-0.50"), False, "it's two", ts),
        (3, None, None, None, None, None, None),
    ]
    cur.executemany("INSERT INTO t VALUES (%s, %s, %s, %s, %s, %s, %s)", rows)
    expect(cur.rowcount, 3, "executemany rowcount")
    conn.commit()

    cur.execute("SELECT i, b, f, d, ok, s, ts FROM t ORDER BY i")
    got = cur.fetchall()
    expect(len(got), 3, "row count")
    for want, row in zip(rows, got):
        for k, (a, e) in enumerate(zip(row, want)):
            expect(a, e, f"row {want[0]} column {k}")

    cur.execute("SELECT s FROM t WHERE s = %s AND i = %s", ("it's two", 2))
    expect(cur.fetchall(), [("it's two",)], "parameters with a quote")

    named = conn.cursor(name="big")
    named.itersize = 2
    named.execute("SELECT i FROM t ORDER BY i")
    expect([r[0] for r in named], [1, 2, 3], "named cursor iteration")
    named.close()
    conn.commit()

    try:
        cur.execute("SELECT no_such_column FROM t")
        sys.exit("FAIL: selecting a missing column succeeded")
    except psycopg2.errors.UndefinedColumn as e:
        print(f"ok   UndefinedColumn: {e}".strip())
    conn.rollback()
    cur.execute("SELECT 1")
    expect(cur.fetchone(), (1,), "session usable after an error")
    conn.close()
    print("psycopg2: all checks passed")


if __name__ == "__main__":
    main(int(sys.argv[1]))
