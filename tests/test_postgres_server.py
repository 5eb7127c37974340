"""The test PostgreSQL server itself (``tests/postgres_server.py``): real, private, one database per test."""

import sqlalchemy as sa


def test_server_is_real_and_listens_only_on_its_socket(postgres_server, postgres_url):
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert int(conn.exec_driver_sql("SHOW server_version").scalar().split(".")[0]) >= 13  # DROP WITH (FORCE)
            assert conn.exec_driver_sql("SHOW listen_addresses").scalar() == ""
            assert conn.exec_driver_sql("SHOW unix_socket_directories").scalar() == str(postgres_server.socket_dir)
            assert conn.exec_driver_sql("SELECT current_database()").scalar() in postgres_url
            # a fresh database: nothing but the catalog
            assert sa.inspect(conn).get_table_names() == []
            conn.exec_driver_sql("CREATE TABLE left_behind (x int)")
            conn.commit()
    finally:
        engine.dispose()


def test_each_test_gets_its_own_database(postgres_url):
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            # the previous test's table is not here
            assert sa.inspect(conn).get_table_names() == []
    finally:
        engine.dispose()
