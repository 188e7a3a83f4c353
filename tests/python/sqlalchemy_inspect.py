"""SQLAlchemy (psycopg2 dialect) against runnel: engine start-up queries,
reflection through the PostgreSQL catalog, Core inserts and selects.

Usage: sqlalchemy_inspect.py PORT. Exits non-zero with a message on a
mismatch.
"""

import sys

from sqlalchemy import create_engine, inspect, text


def expect(actual, expected, what):
    if actual != expected:
        sys.exit(f"FAIL {what}: got {actual!r}, want {expected!r}")
    print(f"ok   {what}")


def main(port):
    engine = create_engine(
        f"postgresql+psycopg2://runnel@127.0.0.1:{port}/runnel")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id BIGINT, name TEXT, "
                          "ts TIMESTAMP, score DOUBLE PRECISION)"))
        conn.execute(text("CREATE VIEW v AS SELECT id FROM t"))
        conn.execute(
            text("INSERT INTO t (id, name) VALUES (:id, :name)"),
            [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        )

    insp = inspect(engine)
    expect(insp.get_table_names(), ["t"], "get_table_names")
    expect(insp.get_view_names(), ["v"], "get_view_names")
    columns = insp.get_columns("t")
    expect([c["name"] for c in columns], ["id", "name", "ts", "score"],
           "get_columns names")
    expect([str(c["type"]) for c in columns],
           ["BIGINT", "TEXT", "TIMESTAMP", "DOUBLE PRECISION"],
           "get_columns types")
    expect(inspect(engine).has_table("t"), True, "has_table t")
    expect(inspect(engine).has_table("nope"), False, "has_table nope")

    # Full Table(autoload_with=...) reflection also reads constraints and
    # indexes through pg_index.indkey, which runnel's pg_catalog does not
    # provide as an array yet; the inspector's table and column listing is
    # what is checked here.
    with engine.connect() as conn:
        got = conn.execute(
            text("SELECT id, name FROM t WHERE id > :v"), {"v": 1}
        ).all()
        expect([tuple(r) for r in got], [(2, "b")], "select with a bound parameter")
        got = conn.execute(text("SELECT id FROM v ORDER BY id")).scalars().all()
        expect(got, [1, 2], "select from the view")
    engine.dispose()
    print("sqlalchemy: all checks passed")


if __name__ == "__main__":
    main(int(sys.argv[1]))
