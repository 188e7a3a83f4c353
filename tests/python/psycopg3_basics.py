"""psycopg 3 against runnel: DDL, executemany with parameters (text format),
typed fetches in text and binary format, NULLs, errors keep the session.

Usage: psycopg3_basics.py PORT. Exits non-zero with a message on a mismatch.
"""

import datetime
import sys
from decimal import Decimal

import psycopg
from psycopg import errors


def expect(actual, expected, what):
    if actual != expected or type(actual) is not type(expected):
        sys.exit(f"FAIL {what}: got {actual!r} ({type(actual).__name__}), "
                 f"want {expected!r} ({type(expected).__name__})")
    print(f"ok   {what}")


def main(port):
    conn = psycopg.connect(host="127.0.0.1", port=port, user="runnel",
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
    conn.commit()

    cur.execute("SELECT i, b, f, d, ok, s, ts FROM t ORDER BY i")
    got = cur.fetchall()
    expect(len(got), 3, "row count")
    for want, row in zip(rows, got):
        for k, (a, e) in enumerate(zip(row, want)):
            expect(a, e, f"text format row {want[0]} column {k}")

    cur.execute("SELECT i, b, f, d, ok, s, ts FROM t WHERE i = %s", (2,),
                binary=True)
    expect(cur.fetchone(), rows[1], "binary format row with a parameter")

    cur.execute("SELECT s FROM t WHERE s = %s AND b < %s", ("it's two", 0))
    expect(cur.fetchall(), [("it's two",)], "string parameter with a quote")

    cur.execute("SELECT count(*) FROM t WHERE ts = %s", (ts,))
    expect(cur.fetchone()[0], 2, "timestamp parameter")

    names = [c.name for c in cur.description]
    expect(names, ["count"], "column name of count(*)")

    try:
        cur.execute("SELECT * FROM no_such_table")
        sys.exit("FAIL: querying a missing table succeeded")
    except errors.UndefinedTable as e:
        print(f"ok   UndefinedTable: {e}".strip())
    conn.rollback()
    cur.execute("SELECT 1")
    expect(cur.fetchone(), (1,), "session usable after an error")

    with psycopg.connect(host="127.0.0.1", port=port, user="runnel",
                         dbname="runnel", autocommit=True) as other:
        got = other.execute("SELECT count(*) FROM t").fetchone()
        expect(got, (3,), "second connection (autocommit) sees the rows")
    conn.close()
    print("psycopg3: all checks passed")


if __name__ == "__main__":
    main(int(sys.argv[1]))
