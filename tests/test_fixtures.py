"""The database fixtures themselves: each backend gives an isolated, writable database."""

import sqlalchemy as sa


def test_each_test_gets_an_empty_writable_database(db_url):
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE probe (id INTEGER PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO probe (id) VALUES (1)"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM probe")).scalar_one() == 1
    engine.dispose()
