"""psycopg 3's cursor.stream() against live results: a continuous SELECT
over a generator source and a SUBSCRIBE to a view over it deliver rows while
the statement runs (it never ends by itself); leaving the loop cancels the
statement, after which the connection works and the view has no subscriber.

Usage: psycopg3_stream.py PORT. Exits non-zero with a message on a mismatch.
"""

import sys

import psycopg


def expect(actual, expected, what):
    if actual != expected:
        sys.exit(f"FAIL {what}: got {actual!r}, want {expected!r}")
    print(f"ok   {what}")


def first(cur, query, n):
    """The first `n` rows of a streaming query, then leave it."""
    rows = []
    for row in cur.stream(query):
        rows.append(row)
        if len(rows) == n:
            break
    return rows


def main(port):
    conn = psycopg.connect(host="127.0.0.1", port=port, user="runnel",
                           dbname="runnel", connect_timeout=30,
                           autocommit=True)
    conn.execute("CREATE SOURCE g (id BIGINT) WITH (connector = 'datagen', "
                 "datagen.rows.per.second = '20', fields.id.kind = 'sequence', "
                 "fields.id.start = '1')")
    conn.execute("CREATE MATERIALIZED VIEW evens AS "
                 "SELECT id FROM g WHERE id % 2 = 0")
    cur = conn.cursor()

    rows = first(cur, "SELECT id FROM g WHERE id % 3 = 0", 3)
    expect(rows, [(3,), (6,), (9,)], "a continuous SELECT streams rows")
    expect(conn.execute("SELECT 1").fetchone(), (1,),
           "the connection after leaving the stream")

    rows = first(cur, "SUBSCRIBE TO evens", 5)
    ids = [r[0] for r in rows]
    expect(all(i % 2 == 0 for i in ids) and len(set(ids)) == 5, True,
           f"SUBSCRIBE streams the view's rows ({ids})")
    expect(conn.execute("SELECT subscribers FROM runnel_catalog.materialized_views "
                        "WHERE name = 'evens'").fetchone(), (0,),
           "leaving the stream ends the subscription")
    rows = first(cur, "SUBSCRIBE evens WITH (snapshot = false)", 2)
    expect(len(rows), 2, "a subscription without the snapshot gets new rows")
    conn.close()


if __name__ == "__main__":
    main(int(sys.argv[1]))
