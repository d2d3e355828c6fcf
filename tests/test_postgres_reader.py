"""PostgreSQL's reader: rows come out of ADBC as bounded Arrow batches.

The CLI on the postgres target (training sets, push, get) is tested with every other
warehouse in tests/test_warehouse_cli.py.
"""

from __future__ import annotations

from featsync.offline.warehouse import PostgresWarehouse, connect


def test_postgres_rows_come_out_in_bounded_arrow_batches(postgres_build):
    """ADBC streams COPY in batches of about `batch_bytes`; featsync re-slices them to at most `batch_rows`."""
    sql = "select g as id, g * 1.5 as x, md5(g::text) as s from generate_series(1, 200000) g"
    with connect(postgres_build.project) as warehouse:
        assert isinstance(warehouse, PostgresWarehouse)
        warehouse.batch_bytes = 1 << 20
        sizes = [(b.num_rows, b.nbytes) for b in warehouse.arrow_batches(sql, batch_rows=10_000)]
    assert sum(n for n, _ in sizes) == 200_000
    assert max(n for n, _ in sizes) <= 10_000 and len(sizes) >= 20
    assert max(nbytes for _, nbytes in sizes) < 2 << 20
