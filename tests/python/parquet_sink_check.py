"""Reads a runnel sink's Parquet files with DuckDB and with pyarrow.

Usage: parquet_sink_check.py DIR SELECT_LIST [CHECK_QUERY]

Every visible file under DIR must be a whole Parquet file (its footer
parses); hidden files (a leading '.') are the sink's unfinished temporaries
and are skipped, as readers' globs skip them. Both readers must return the
same rows for SELECT_LIST (over a table `t` with Hive partition columns);
they are printed sorted as `row: a|b|c`, followed by `schema: name:type,...`
(pyarrow's view of the files' own columns) and `files: N`. CHECK_QUERY, when
given, runs over `t` in DuckDB and must return 0 (e.g. rows whose partition
directory disagrees with their values). Exits non-zero on any mismatch.
"""

import os
import sys

import duckdb
import pyarrow.parquet as pq


def main():
    root, select = sys.argv[1], sys.argv[2]
    check = sys.argv[3] if len(sys.argv) > 3 else None
    files = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            if not name.endswith(".parquet"):
                sys.exit(f"unexpected visible file {path}")
            # Raises on a partial file: the footer is at the end.
            pq.ParquetFile(path).metadata
            files.append(path)
    if not files:
        sys.exit(f"no Parquet files under {root}")

    con = duckdb.connect()
    glob = os.path.join(root, "**", "*.parquet")
    con.execute(
        f"CREATE VIEW t AS SELECT * FROM read_parquet('{glob}', hive_partitioning = true)"
    )
    by_duckdb = sorted(
        "|".join(str(v) for v in row) for row in con.execute(f"SELECT {select} FROM t").fetchall()
    )
    if check:
        (bad,) = con.execute(check).fetchone()
        if bad != 0:
            sys.exit(f"check {check!r} returned {bad}")

    table = pq.read_table(root)
    arrow_con = duckdb.connect()
    arrow_con.register("t", table)
    by_pyarrow = sorted(
        "|".join(str(v) for v in row)
        for row in arrow_con.execute(f"SELECT {select} FROM t").fetchall()
    )
    if by_duckdb != by_pyarrow:
        sys.exit(f"DuckDB and pyarrow disagree: {len(by_duckdb)} vs {len(by_pyarrow)} rows")

    schema = pq.read_schema(files[0])
    for row in by_duckdb:
        print(f"row: {row}")
    print("schema: " + ",".join(f"{f.name}:{f.type}" for f in schema))
    print(f"files: {len(files)}")


if __name__ == "__main__":
    main()
