import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _globals as g

# pg_dumpall --globals-only --no-role-passwords, PostgreSQL 17.12, as written.
SAMPLE = """--
-- PostgreSQL database cluster dump
--

\\restrict FcZh2XVNSw4pYhX1szuhvXaJB3FkO80BkuN0oR9rUr2KB8azG6EF8GSxqy3hnJh

SET default_transaction_read_only = off;

SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;

--
-- Roles
--

CREATE ROLE "fx reader ü";
ALTER ROLE "fx reader ü" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE fx_admin;
ALTER ROLE fx_admin WITH SUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;

--
-- User Configurations
--

--
-- User Config "fx reader ü"
--

ALTER ROLE "fx reader ü" SET work_mem TO '8MB';


--
-- Role memberships
--

GRANT "fx reader ü" TO fx_admin WITH INHERIT TRUE GRANTED BY postgres;

\\unrestrict FcZh2XVNSw4pYhX1szuhvXaJB3FkO80BkuN0oR9rUr2KB8azG6EF8GSxqy3hnJh

--
-- PostgreSQL database cluster dump complete
--
"""

POSTGRES = {"postgres": {"superuser": True}}
NEW_ROLE = "CREATE ROLE {0};\nALTER ROLE {0} WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION"
NEW_ROLE += " NOBYPASSRLS;\n"


def refused(text):
    with pytest.raises(g.GlobalsError) as e:
        g.parse(text)
    return str(e.value)


def plan_of(text, existing=None, user_settings=("work_mem", "search_path"), **kw):
    return g.plan(g.parse(text), POSTGRES if existing is None else existing, set(user_settings), **kw)


# --- parse -----------------------------------------------------------------------------------


def test_sample_parses():
    st = g.parse(SAMPLE)
    assert [(s["line"], s["kind"]) for s in st] == [
        (5, "session"),
        (7, "session"),
        (9, "session"),
        (10, "session"),
        (16, "create_role"),
        (17, "alter_role"),
        (18, "create_role"),
        (19, "alter_role"),
        (20, "create_role"),
        (21, "alter_role"),
        (31, "role_setting"),
        (38, "grant_role"),
        (40, "session"),
    ]
    assert st[4]["role"] == "fx reader ü"
    assert st[7]["attributes"] == [
        "SUPERUSER",
        "INHERIT",
        "NOCREATEROLE",
        "NOCREATEDB",
        "NOLOGIN",
        "NOREPLICATION",
        "NOBYPASSRLS",
    ]
    assert st[7]["connection_limit"] is None and st[7]["password"] is False
    assert st[10] == {
        "kind": "role_setting",
        "line": 31,
        "role": "fx reader ü",
        "database": None,
        "name": "work_mem",
        "values": [{"string": "8MB"}],
        "reset": False,
    }
    grant = st[11]
    assert (grant["granted"], grant["member"], grant["grantor"]) == ("fx reader ü", "fx_admin", "postgres")
    assert (grant["admin"], grant["inherit"], grant["set"]) == (False, True, None)


def test_unquoted_names_fold_to_lower_case():
    st = g.parse('CREATE ROLE Fx_Admin;\nGRANT FX_ADMIN TO "Fx_Admin";\n')
    assert st[0]["role"] == "fx_admin"
    assert (st[1]["granted"], st[1]["member"]) == ("fx_admin", "Fx_Admin")


def test_other_alter_role_forms():
    st = g.parse(
        "ALTER ROLE a WITH LOGIN CONNECTION LIMIT 5 VALID UNTIL '2030-01-01 00:00:00+00';\n"
        "ALTER ROLE b WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:abc$def:ghi';\n"
        "ALTER ROLE c WITH LOGIN PASSWORD 'md5abcdef';\n"
    )
    assert (st[0]["connection_limit"], st[0]["valid_until"], st[0]["password"]) == (5, "2030-01-01 00:00:00+00", False)
    assert st[1]["password"] is True and st[2]["password"] is True
    assert "SCRAM" not in repr(st) and "md5" not in repr(st)


def test_setting_values():
    st = g.parse(
        "ALTER ROLE a SET search_path TO 'a', 'b';\n"
        "ALTER ROLE a SET statement_timeout TO 100;\n"
        "ALTER ROLE a SET work_mem TO DEFAULT;\n"
        'ALTER ROLE a IN DATABASE "my db" SET "search_path" TO "$user", public;\n'
        "ALTER ROLE a RESET ALL;\n"
    )
    assert st[0]["values"] == [{"string": "a"}, {"string": "b"}]
    assert st[1]["values"] == [{"word": "100"}]
    assert st[2]["values"] == [{"word": "DEFAULT"}]
    assert (st[3]["database"], st[3]["name"], st[3]["values"]) == (
        "my db",
        "search_path",
        [{"string": "$user"}, {"word": "public"}],
    )
    assert (st[4]["reset"], st[4]["name"], st[4]["values"]) == (True, None, None)


def test_grant_forms():
    st = g.parse(
        "GRANT a TO b;\n"
        "GRANT a TO b WITH ADMIN OPTION GRANTED BY c;\n"
        "GRANT a TO b WITH ADMIN TRUE, INHERIT FALSE, SET TRUE GRANTED BY c;\n"
    )
    assert [(s["admin"], s["inherit"], s["set"], s["grantor"]) for s in st] == [
        (False, None, None, None),
        (True, None, None, "c"),
        (True, False, True, "c"),
    ]


def test_comment_tablespace_and_label_forms():
    st = g.parse(
        "COMMENT ON ROLE a IS 'it''s a\\b';\n"
        "CREATE TABLESPACE t OWNER o LOCATION '/x';\n"
        "ALTER TABLESPACE t SET (seq_page_cost=1.0);\n"
        "GRANT ALL ON TABLESPACE t TO a;\n"
        "GRANT SET ON PARAMETER work_mem TO a;\n"
        "SECURITY LABEL FOR dummy ON ROLE a IS 'classified';\n"
    )
    assert st[0]["comment"] == "it's a\\b"
    assert [s["kind"] for s in st[1:]] == ["tablespace"] * 3 + ["parameter_grant", "security_label"]
    assert st[2]["text"] == "ALTER TABLESPACE t SET (seq_page_cost=1.0);"


def test_shell_escape_line_is_refused_with_its_line_number():
    text = SAMPLE.replace("SET client_encoding = 'UTF8';", "\\! touch /tmp/x")
    message = refused(text)
    assert "line 9: \\! touch /tmp/x" in message
    assert "roles: false" in message


def test_meta_command_after_a_statement_on_the_same_line_is_refused():
    message = refused("CREATE ROLE a;\nSELECT 1; \\! id\n")
    assert "line 2: SELECT 1;" in message
    assert "line 2: \\! id (a psql meta-command" in message


@pytest.mark.parametrize(
    "text",
    [
        "CREATE ROLE a \\gexec\n;",
        " \\restrict abc\n",
        "\\restrict abc; \\! id\n",
        "\\connect template1\n",
        "\\ir /etc/passwd\n",
    ],
)
def test_any_other_backslash_is_refused(text):
    assert "a psql meta-command" in refused(text)


def test_every_bad_statement_is_named():
    message = refused("CREATE ROLE ok;\nDROP ROLE x;\nCREATE ROLE ok2;\nCOPY t FROM PROGRAM 'id';\n")
    assert "line 2: DROP ROLE x;" in message and "line 4: COPY t FROM PROGRAM 'id';" in message
    assert "line 1" not in message and "line 3" not in message


@pytest.mark.parametrize(
    "text",
    [
        'CREATE ROLE "never ends;\n',
        "COMMENT ON ROLE a IS 'never ends;\nCREATE ROLE b;\n",
    ],
)
def test_unterminated_quote_is_refused(text):
    assert "unterminated" in refused(text)


@pytest.mark.parametrize(
    "text",
    [
        "DO $$ BEGIN PERFORM pg_sleep(1); END $$;\n",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';\n",
        "ALTER ROLE a SET work_mem TO E'\\x41';\n",
        "COMMENT ON ROLE a IS $x$hi$x$;\n",
        "CREATE ROLE a; /* comment */\n",
        "SELECT 1;\n",
        "CREATE ROLE a\n",
        "SET standard_conforming_strings = off;\n",
        "CREATE ROLE public;\n",
        'CREATE ROLE "";\n',
        "GRANT ALL ON DATABASE d TO a;\n",
        "ALTER ROLE a WITH SUPERUSER RENAME;\n",
        "ALTER ROLE a SET work_mem FROM CURRENT;\n",
        "CREATE ROLE fx\u00fc;\n",
    ],
)
def test_statements_outside_the_format_are_refused(text):
    assert "line 1: " in refused(text)


def test_prefixed_strings_are_refused_as_such():
    assert "prefixed string E'...'" in refused("COMMENT ON ROLE a IS E'\\x41';\n")


def test_password_is_not_shown_in_the_refusal():
    message = refused("ALTER ROLE a WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:secret' UNKNOWN;\n")
    assert "secret" not in message and "PASSWORD '...'" in message


def test_non_utf8_file_is_refused_unless_ascii():
    g.parse("SET client_encoding = 'LATIN1';\nCREATE ROLE a;\n")
    assert "not UTF8" in refused("SET client_encoding = 'LATIN1';\nCREATE ROLE \"é\";\n")


# --- plan ------------------------------------------------------------------------------------


def test_sample_plan_creates_only_missing_roles():
    p = plan_of(SAMPLE)
    assert p["sql"] == [
        'CREATE ROLE "fx reader ü" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS',
        'CREATE ROLE "fx_admin" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS',
        'ALTER ROLE "fx reader ü" SET "work_mem" TO \'8MB\'',
        'GRANT "fx reader ü" TO "fx_admin" WITH INHERIT TRUE',
    ]
    assert p["created"] == ["fx reader ü", "fx_admin"]
    assert p["skipped"] == [
        'role "fx_admin" had SUPERUSER in the backup; it was created without it '
        '(ALTER ROLE "fx_admin" SUPERUSER by hand if it should have it)',
        'role "postgres" exists on this server: left as it is '
        "(the backup would have set SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS)",
    ]


def test_setting_not_in_user_settings_is_skipped():
    p = plan_of(SAMPLE, user_settings=())
    assert not any("work_mem" in s for s in p["sql"])
    assert (
        'role "fx reader ü": set work_mem not applied: only settings a user may change '
        "(pg_settings.context 'user') are restored per role"
    ) in p["skipped"]


def test_session_preload_libraries_is_skipped():
    p = plan_of("CREATE ROLE a;\nALTER ROLE a SET session_preload_libraries TO 'evil';\n")
    assert p["sql"] == ['CREATE ROLE "a"']
    assert p["skipped"][0].startswith('role "a": set session_preload_libraries not applied: only settings')


def test_membership_only_for_created_members():
    text = SAMPLE + 'GRANT fx_admin TO postgres;\nGRANT "fx reader ü" TO ghost;\n'
    p = plan_of(text, existing={"postgres": {"superuser": True}, "fx_admin": {"superuser": False}})
    assert p["created"] == ["fx reader ü"]
    assert p["sql"] == [
        'CREATE ROLE "fx reader ü" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS',
        'ALTER ROLE "fx reader ü" SET "work_mem" TO \'8MB\'',
    ]
    assert p["skipped"] == [
        'role "fx_admin" exists on this server: left as it is (the backup would have set SUPERUSER INHERIT '
        'NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS; granted it membership in "fx reader ü")',
        'role "postgres" exists on this server: left as it is (the backup would have set SUPERUSER INHERIT '
        'CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS; granted it membership in "fx_admin")',
        'membership of "ghost" in "fx reader ü" not granted: "ghost" does not exist on this server',
    ]


def test_superuser_for_existing_role_runs_nothing():
    p = plan_of("ALTER ROLE postgres WITH SUPERUSER;\n", existing={"postgres": {"superuser": False}})
    assert p == {
        "sql": [],
        "created": [],
        "skipped": ['role "postgres" exists on this server: left as it is (the backup would have set SUPERUSER)'],
    }


def test_current_user_counts_as_existing():
    p = g.plan(g.parse("CREATE ROLE admin;\nALTER ROLE admin WITH SUPERUSER;\n"), {}, set(), current_user="admin")
    assert p["sql"] == [] and p["created"] == []


def test_privileged_attributes_are_never_given():
    p = plan_of(
        "CREATE ROLE r;\nALTER ROLE r WITH LOGIN REPLICATION BYPASSRLS CONNECTION LIMIT 5 VALID UNTIL 'infinity';\n"
    )
    assert p["sql"] == [
        "CREATE ROLE \"r\" WITH LOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 5 VALID UNTIL 'infinity'"
    ]
    assert p["skipped"] == [
        'role "r" had REPLICATION BYPASSRLS in the backup; it was created without them '
        '(ALTER ROLE "r" REPLICATION BYPASSRLS by hand if it should have them)'
    ]


def test_passwords_are_never_set_and_said_once():
    p = plan_of("ALTER ROLE a WITH LOGIN PASSWORD 'md5x';\nALTER ROLE b WITH LOGIN PASSWORD 'md5y';\n")
    assert p["sql"] == ['CREATE ROLE "a" WITH LOGIN', 'CREATE ROLE "b" WITH LOGIN']
    assert p["skipped"] == ["passwords in the backup were not restored: set them by hand (ALTER ROLE ... PASSWORD)"]


@pytest.mark.parametrize(
    "name",
    [
        'say "hi"',
        "schema.role",
        "with spaces",
        "rocket \U0001f680",
        "x" * 63,
        "\u00e9" * 31 + "x",  # 63 bytes in UTF-8
        "Upper",
        "semi;colon -- and ' quote",
        "back\\slash",
        "new\n\\! id",
    ],
)
def test_identifiers_round_trip(name):
    q = '"' + name.replace('"', '""') + '"'
    text = NEW_ROLE.format(q) + "COMMENT ON ROLE %s IS 'x';\nGRANT pg_monitor TO %s;\n" % (q, q)
    p = plan_of(text, existing={"pg_monitor": {"superuser": False}})
    assert p["created"] == [name]
    assert p["sql"] == [
        "CREATE ROLE %s WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS" % q,
        "COMMENT ON ROLE %s IS 'x'" % q,
        'GRANT "pg_monitor" TO %s' % q,
    ]


def test_names_longer_than_63_bytes_are_refused():
    assert "longer than 63 bytes" in refused('CREATE ROLE "%s";\n' % ("\u00e9" * 32))


def test_strings_are_quoted_again():
    p = plan_of("CREATE ROLE a;\nCOMMENT ON ROLE a IS 'it''s; DROP ROLE x; --\\';\n")
    assert p["sql"][1] == "COMMENT ON ROLE \"a\" IS 'it''s; DROP ROLE x; --\\'"


def test_server_program_membership_is_skipped():
    existing = {r: {"superuser": False} for r in g.SERVER_ACCESS_ROLES}
    p = plan_of("CREATE ROLE a;\nGRANT pg_execute_server_program TO a;\n", existing=existing)
    assert p["sql"] == ['CREATE ROLE "a"']
    assert p["skipped"] == [
        'membership of "a" in "pg_execute_server_program" not granted: it lets a member run programs '
        "or read and write files as the server's OS user (grant it by hand)"
    ]


def test_no_membership_in_superusers():
    text = (
        "CREATE ROLE a;\nCREATE ROLE boss;\nALTER ROLE boss WITH SUPERUSER;\nGRANT postgres TO a;\nGRANT boss TO a;\n"
    )
    p = plan_of(text)
    assert p["sql"] == ['CREATE ROLE "a"', 'CREATE ROLE "boss" WITH NOSUPERUSER']
    assert p["skipped"][1:] == [
        'membership of "a" in "postgres" not granted: "postgres" is a superuser on this server',
        'membership of "a" in "boss" not granted: "boss" was a superuser in the backup '
        "(grant it by hand once you decide about its SUPERUSER)",
    ]


def test_in_database_setting_needs_the_database():
    text = (
        "CREATE ROLE a;\nALTER ROLE a IN DATABASE gone SET work_mem TO '1MB';\n"
        "ALTER ROLE a IN DATABASE app SET work_mem TO '2MB';\n"
    )
    p = plan_of(text, databases=["app"])
    assert p["sql"] == ['CREATE ROLE "a"', 'ALTER ROLE "a" IN DATABASE "app" SET "work_mem" TO \'2MB\'']
    assert p["skipped"] == [
        'role "a": set work_mem in database "gone" not applied: database "gone" does not exist on this server'
    ]


def test_setting_values_render_safely():
    text = "CREATE ROLE a;\nALTER ROLE a SET search_path TO 'a''b', '$user', public;\n"
    text += "ALTER ROLE a SET work_mem TO DEFAULT;\n"
    p = plan_of(text)
    assert p["sql"][1:] == [
        "ALTER ROLE \"a\" SET \"search_path\" TO 'a''b', '$user', public",
        'ALTER ROLE "a" SET "work_mem" TO DEFAULT',
    ]
    with pytest.raises(ValueError):
        g.render_value({"word": "1; DROP ROLE x"})


@pytest.mark.parametrize(
    "major, sql",
    [
        (15, ['GRANT "g" TO "m" WITH ADMIN OPTION', 'GRANT "g2" TO "m"']),
        (16, ['GRANT "g" TO "m" WITH ADMIN TRUE', 'GRANT "g2" TO "m" WITH INHERIT TRUE, SET TRUE']),
    ],
)
def test_grant_syntax_follows_the_target(major, sql):
    text = "CREATE ROLE m;\nCREATE ROLE g;\nCREATE ROLE g2;\n"
    text += "GRANT g TO m WITH ADMIN OPTION GRANTED BY postgres;\nGRANT g2 TO m WITH INHERIT TRUE, SET TRUE;\n"
    assert plan_of(text, server_major=major)["sql"][3:] == sql


def test_limited_membership_is_not_widened_on_pg15():
    text = "CREATE ROLE m;\nCREATE ROLE g;\nGRANT g TO m WITH ADMIN TRUE, INHERIT FALSE, SET FALSE;\n"
    assert plan_of(text)["sql"][2] == 'GRANT "g" TO "m" WITH ADMIN TRUE, INHERIT FALSE, SET FALSE'
    p = plan_of(text, server_major=15)
    assert len(p["sql"]) == 2
    assert p["skipped"] == [
        'membership of "m" in "g" not granted: PostgreSQL 15 cannot grant it with INHERIT FALSE / SET FALSE; '
        "it would give more than the backup had"
    ]


def test_comment_only_for_created_roles():
    p = plan_of(
        "CREATE ROLE a;\nCOMMENT ON ROLE a IS 'new';\nCOMMENT ON ROLE postgres IS 'old';\nCOMMENT ON ROLE a IS NULL;\n"
    )
    assert p["sql"] == ['CREATE ROLE "a"', "COMMENT ON ROLE \"a\" IS 'new'", 'COMMENT ON ROLE "a" IS NULL']
    assert p["skipped"] == [
        'role "postgres" exists on this server: left as it is (the backup would have set its comment)'
    ]


def test_tablespaces_parameters_and_labels_are_reported_not_applied():
    text = (
        "CREATE TABLESPACE t OWNER o LOCATION '/x';\nGRANT SET ON PARAMETER work_mem TO a;\n"
        "SECURITY LABEL FOR dummy ON ROLE a IS 'x';\n"
    )
    p = plan_of(text)
    assert p["sql"] == [] and p["created"] == []
    assert p["skipped"] == [
        "line 1: tablespaces are not restored: create them by hand: CREATE TABLESPACE t OWNER o LOCATION '/x';",
        "line 2: privileges on configuration parameters are not restored: grant them by hand if needed: "
        "GRANT SET ON PARAMETER work_mem TO a;",
        "line 3: security labels are not restored: apply them by hand if this server has the provider: "
        "SECURITY LABEL FOR dummy ON ROLE a IS 'x';",
    ]


def test_reserved_names_are_not_created():
    p = plan_of("CREATE ROLE pg_mine;\nALTER ROLE pg_mine WITH LOGIN;\n")
    assert p["sql"] == []
    assert p["skipped"] == ['role "pg_mine" not created: names beginning with pg_ are reserved']


@pytest.mark.parametrize(
    "granted, existing",
    [
        ("pg_read_all_data", {"pg_read_all_data": {"superuser": False}}),
        ("pg_write_all_data", {"pg_write_all_data": {"superuser": False}}),
        ("pg_signal_backend", {"pg_signal_backend": {"superuser": False}}),
        ("replicator", {"replicator": {"superuser": False, "privileged": True}}),
    ],
)
def test_no_membership_in_a_role_with_powers_beyond_reading(granted, existing):
    text = NEW_ROLE.format("app") + "GRANT %s TO app;\n" % granted
    p = plan_of(text, existing=dict(POSTGRES, **existing))
    assert p["created"] == ["app"] and not any(s.startswith("GRANT") for s in p["sql"]), p["sql"]
    assert any('membership of "app" in "%s" not granted' % granted in s for s in p["skipped"]), p["skipped"]


def test_createrole_is_withheld_before_postgresql_16():
    text = "CREATE ROLE admin;\nALTER ROLE admin WITH NOSUPERUSER CREATEROLE LOGIN;\n"
    assert plan_of(text, server_major=15)["sql"] == ['CREATE ROLE "admin" WITH NOSUPERUSER NOCREATEROLE LOGIN']
    assert plan_of(text, server_major=16)["sql"] == ['CREATE ROLE "admin" WITH NOSUPERUSER CREATEROLE LOGIN']


@pytest.mark.parametrize("secret", ["'md5abc'", "E'md5abc'", "'unterminated md5abc"])
def test_a_refused_statement_never_shows_a_password(secret):
    message = refused("CREATE ROLE a;\nALTER ROLE a WITH LOGIN PASSWORD %s;\n\\! id\n" % secret)
    assert "md5abc" not in message and "line " in message
