"""The types of a history restore's DDL are the server's, never the manifest's text: each archived
type is resolved on the target server (to_regtype, to_regtypemod) and written back by its own
format_type; a type it lacks takes the recorded fallback; text that is more than a type name is
refused before any DDL runs."""

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_sql


@pytest.fixture
def conn(params):
    conn = _history_sql.open_connection(params, "postgres")
    yield conn
    conn.close()


def test_the_ddl_takes_the_servers_spelling_of_each_type(conn):
    columns = [
        {"name": "a", "pg_type": "int4"},
        {"name": "b", "pg_type": "numeric(10, 2)"},
        {"name": "c", "pg_type": "varchar(20)[]"},
        {"name": "d", "pg_type": "timestamptz(3)"},
        {"name": "e", "pg_type": "no_such_type", "fallback_type": "int8"},
        {"name": "f", "pg_type": "no_such_type"},
    ]
    resolved, warnings = _history_sql.resolve_columns(conn, columns)
    assert [c["pg_type"] for c in resolved] == [
        "integer",
        "numeric(10,2)",
        "character varying(20)[]",
        "timestamp(3) with time zone",
        "bigint",
        "text",
    ]
    assert len(warnings) == 2 and all("type no_such_type does not exist" in w for w in warnings)


@pytest.mark.parametrize(
    "text",
    ["text DEFAULT now()", "integer GENERATED ALWAYS AS (1) STORED", 'text COLLATE "C"', "int NOT NULL"],
)
def test_words_after_a_type_are_refused_before_any_ddl(conn, text):
    with pytest.raises(_history_sql.HistoryError, match="is not a type name") as info:
        _history_sql.resolve_columns(conn, [{"name": "x", "pg_type": text}])
    assert info.value.kind == "integrity"
    assert _history_sql.server_type(conn, "integer") == "integer"  # the connection is still usable
