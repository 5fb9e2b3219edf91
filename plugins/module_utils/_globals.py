# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A safe reader and planner for the roles file of a backup set: the output of
``pg_dumpall --globals-only --no-role-passwords`` (PostgreSQL 14 to 17).

Private to the collection. No Ansible imports: the scheduled runner uses this too.

The file is never given to psql: a tampered file could run shell commands (``\\!``) and an
old one would ``ALTER ROLE`` / ``GRANT`` roles that exist on the target (giving back a revoked
SUPERUSER). ``parse`` (in _globals_parse) understands the statements pg_dumpall writes and refuses the whole file
if anything else is in it; ``plan`` builds new SQL from the parsed values (every name and
string quoted again here) that only creates the roles the target does not have.

Decisions: passwords are parsed but never set. SUPERUSER, REPLICATION and BYPASSRLS are never
given. Tablespaces, privileges on configuration parameters (PostgreSQL 15+) and security
labels are parsed and reported, never applied: they name server paths, server-wide powers or
label providers the target may not have, and refusing the file for them would lose all roles.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _globals_parse, _pg

# The parser's API, so that callers need one module.
GlobalsError = _globals_parse.GlobalsError
parse = _globals_parse.parse
FLAG_ATTRIBUTES = _globals_parse.FLAG_ATTRIBUTES
VALUE_WORD_RE = _globals_parse.VALUE_WORD_RE
snippet = _globals_parse.snippet

# Role attributes that let a role bypass every permission check or read all data.
PRIVILEGED_ATTRIBUTES = ("SUPERUSER", "REPLICATION", "BYPASSRLS")
# Membership in these lets a role run programs or read and write files as the server's OS user.
SERVER_ACCESS_ROLES = ("pg_execute_server_program", "pg_read_server_files", "pg_write_server_files")
# The predefined roles a backup may give back: they only let a member read statistics and
# settings. Every other pg_* role (read or write all data, signal backends...) is for a person.
SAFE_PREDEFINED_ROLES = ("pg_monitor", "pg_read_all_settings", "pg_read_all_stats", "pg_stat_scan_tables")


# --- plan ----------------------------------------------------------------------------------------


def _family(attribute):
    return attribute[2:] if attribute.startswith("NO") and attribute[2:] in FLAG_ATTRIBUTES else attribute


def _merged_roles(statements):
    """role -> {'attributes': {family: keyword}, 'connection_limit', 'valid_until'}, later
    ALTER ROLE statements overriding earlier ones; in the order the file defines the roles."""
    roles = {}
    for st in statements:
        if st["kind"] not in ("create_role", "alter_role"):
            continue
        info = roles.setdefault(st["role"], {"attributes": {}, "connection_limit": None, "valid_until": None})
        for attribute in st.get("attributes", ()):
            info["attributes"][_family(attribute)] = attribute
        for key in ("connection_limit", "valid_until"):
            if st.get(key) is not None:
                info[key] = st[key]
    return roles


def _alter_summary(st):
    words = list(st["attributes"])
    if st["connection_limit"] is not None:
        words.append("CONNECTION LIMIT %d" % st["connection_limit"])
    if st["valid_until"] is not None:
        words.append("VALID UNTIL %s" % _pg.quote_literal(st["valid_until"]))
    if st["password"]:
        words.append("PASSWORD")
    return "set " + " ".join(words) if words else None


def _setting_label(st):
    name = "all settings" if st["name"] is None else st["name"]
    where = "" if st["database"] is None else " in database %s" % _pg.quote_ident(st["database"])
    return "%s %s%s" % ("reset" if st["reset"] else "set", name, where)


def render_value(value):
    if "string" in value:
        return _pg.quote_literal(value["string"])
    if not VALUE_WORD_RE.match(value["word"]):
        raise ValueError("unsafe setting value %r" % value["word"])
    return value["word"]


def _q(name):
    return _pg.quote_ident(name)


def _setting_sql(st):
    head = "ALTER ROLE %s" % _q(st["role"])
    if st["database"] is not None:
        head += " IN DATABASE %s" % _q(st["database"])
    if st["reset"]:
        return "%s RESET %s" % (head, "ALL" if st["name"] is None else _q(st["name"]))
    return "%s SET %s TO %s" % (head, _q(st["name"]), ", ".join(render_value(v) for v in st["values"]))


class _Planner:
    """Walks the statements in the file's order; see ``plan``."""

    def __init__(self, statements, existing_roles, user_settings, databases, current_user, server_major):
        self.existing = dict(existing_roles)
        if current_user and current_user not in self.existing:
            # Whether it is a superuser is not known here: treated as one, so no membership in it is granted.
            self.existing[current_user] = {"superuser": True}
        self.user_settings = {s.lower() for s in user_settings}
        self.databases = set(databases)
        self.server_major = int(server_major)
        self.roles = _merged_roles(statements)
        # CREATE ROLE refuses names beginning with pg_ (pg_dumpall does not dump such roles).
        self.will_create = {r for r in self.roles if r not in self.existing and not r.startswith("pg_")}
        self.sql, self.created, self.skipped = [], [], []
        self.defined = set()
        self.left_alone = {}  # existing role -> [its index in skipped, what the backup would have done]
        self.password_noted = False

    def result(self):
        for role, (index, parts) in self.left_alone.items():
            text = "role %s exists on this server: left as it is" % _q(role)
            if parts:
                text += " (the backup would have %s)" % "; ".join(parts)
            self.skipped[index] = text
        return {"sql": self.sql, "created": self.created, "skipped": self.skipped}

    def _leave_alone(self, role, part):
        if role not in self.left_alone:
            # One line per role, at its first statement; filled in by result() once all is known.
            self.left_alone[role] = [len(self.skipped), []]
            self.skipped.append(None)
        if part and part not in self.left_alone[role][1]:
            self.left_alone[role][1].append(part)

    def create_role(self, st):
        self._define(st["role"], None)

    def alter_role(self, st):
        if st["password"] and not self.password_noted:
            self.password_noted = True
            self.skipped.append("passwords in the backup were not restored: set them by hand (ALTER ROLE ... PASSWORD)")
        self._define(st["role"], _alter_summary(st))

    def _define(self, role, part):
        if role in self.existing:
            self._leave_alone(role, part)
        elif role not in self.defined:
            self.defined.add(role)
            if role in self.will_create:
                self._create(role)
            else:
                self.skipped.append("role %s not created: names beginning with pg_ are reserved" % _q(role))

    def _create(self, role):
        info = self.roles[role]
        words, privileged = [], []
        # Before PostgreSQL 16, CREATEROLE lets a role grant itself any role but superuser.
        withheld = PRIVILEGED_ATTRIBUTES + (("CREATEROLE",) if self.server_major < 16 else ())
        for attribute in info["attributes"].values():
            if attribute in withheld:
                privileged.append(attribute)
                attribute = "NO" + attribute
            words.append(attribute)
        if info["connection_limit"] is not None:
            words.append("CONNECTION LIMIT %d" % info["connection_limit"])
        if info["valid_until"] is not None:
            words.append("VALID UNTIL %s" % _pg.quote_literal(info["valid_until"]))
        q = _q(role)
        self.sql.append("CREATE ROLE %s WITH %s" % (q, " ".join(words)) if words else "CREATE ROLE %s" % q)
        self.created.append(role)
        if privileged:
            self._note_privileged(q, privileged)

    def _note_privileged(self, q, privileged):
        attrs, it = " ".join(privileged), "it" if len(privileged) == 1 else "them"
        self.skipped.append(
            "role %s had %s in the backup; it was created without %s (ALTER ROLE %s %s by hand if it should have %s)"
            % (q, attrs, it, q, attrs, it)
        )

    def role_setting(self, st):
        if st["role"] in self.existing:
            return self._leave_alone(st["role"], _setting_label(st))
        reason = self._setting_refusal(st)
        if reason:
            self.skipped.append("role %s: %s not applied: %s" % (_q(st["role"]), _setting_label(st), reason))
        else:
            self.sql.append(_setting_sql(st))

    def _setting_refusal(self, st):
        if st["role"] not in self.will_create:
            return "the role does not exist on this server"
        if st["name"] is not None and st["name"].lower() not in self.user_settings:
            # Other contexts (superuser, backend, ...) can load libraries or change server behaviour.
            return "only settings a user may change (pg_settings.context 'user') are restored per role"
        if st["database"] is not None and st["database"] not in self.databases:
            return "database %s does not exist on this server" % _q(st["database"])
        return None

    def grant_role(self, st):
        if st["member"] in self.existing:
            return self._leave_alone(st["member"], "granted it membership in %s" % _q(st["granted"]))
        reason = self._grant_refusal(st)
        if reason:
            self.skipped.append(
                "membership of %s in %s not granted: %s" % (_q(st["member"]), _q(st["granted"]), reason)
            )
        else:
            self.sql.append(self._grant_sql(st))

    def _grant_refusal(self, st):
        member, granted = st["member"], st["granted"]
        if member not in self.will_create:
            return "%s does not exist on this server" % _q(member)
        if granted in SERVER_ACCESS_ROLES:
            return "it lets a member run programs or read and write files as the server's OS user (grant it by hand)"
        if granted.startswith("pg_") and granted not in SAFE_PREDEFINED_ROLES:
            return "predefined roles other than %s are granted by hand" % ", ".join(SAFE_PREDEFINED_ROLES)
        if granted == member:
            return "a role cannot be a member of itself"
        if granted not in self.existing and granted not in self.will_create:
            return "%s does not exist on this server" % _q(granted)
        if self.existing.get(granted, {}).get("superuser"):
            return "%s is a superuser on this server" % _q(granted)
        if self.existing.get(granted, {}).get("privileged"):
            return "%s has SUPERUSER, REPLICATION, BYPASSRLS or (before PostgreSQL 16) CREATEROLE here" % _q(granted)
        if granted in self.will_create and self.roles[granted]["attributes"].get("SUPERUSER") == "SUPERUSER":
            # If SUPERUSER is given back by hand, SET ROLE would make every member one: that is for a person to decide.
            return "%s was a superuser in the backup (grant it by hand once you decide about its SUPERUSER)" % _q(
                granted
            )
        if self.server_major < 16 and (st["inherit"] is False or st["set"] is False):
            return (
                "PostgreSQL %d cannot grant it with INHERIT FALSE / SET FALSE; it would give more than the backup had"
                % (self.server_major)
            )
        return None

    def _grant_sql(self, st):
        text = "GRANT %s TO %s" % (_q(st["granted"]), _q(st["member"]))
        if self.server_major < 16:
            return text + " WITH ADMIN OPTION" if st["admin"] else text
        options = ["ADMIN TRUE"] if st["admin"] else []
        for key in ("inherit", "set"):
            if st[key] is not None:
                options.append("%s %s" % (key.upper(), "TRUE" if st[key] else "FALSE"))
        return text + " WITH " + ", ".join(options) if options else text

    def comment_role(self, st):
        role = st["role"]
        if role in self.existing:
            return self._leave_alone(role, "set its comment")
        if role not in self.will_create:
            self.skipped.append("role %s: comment not applied: the role does not exist on this server" % _q(role))
            return None
        comment = "NULL" if st["comment"] is None else _pg.quote_literal(st["comment"])
        self.sql.append("COMMENT ON ROLE %s IS %s" % (_q(role), comment))
        return None

    def tablespace(self, st):
        self._unapplied(st, "tablespaces are not restored: create them by hand")

    def parameter_grant(self, st):
        self._unapplied(st, "privileges on configuration parameters are not restored: grant them by hand if needed")

    def security_label(self, st):
        self._unapplied(st, "security labels are not restored: apply them by hand if this server has the provider")

    def _unapplied(self, st, why):
        self.skipped.append("line %d: %s: %s" % (st["line"], why, snippet(st["text"], 200)))

    def session(self, st):
        return None


_KINDS = (
    "create_role",
    "alter_role",
    "role_setting",
    "grant_role",
    "comment_role",
    "tablespace",
    "parameter_grant",
    "security_label",
    "session",
)


def plan(statements, existing_roles, user_settings, databases=(), current_user=None, server_major=17):
    """The SQL that restores what ``parse`` read, without touching roles the server has.

    existing_roles: {role name: {'superuser': bool, 'privileged': bool}} on the target, privileged
    meaning any of SUPERUSER, REPLICATION, BYPASSRLS, or CREATEROLE before 16 (current_user
    always counts as existing). user_settings: names of settings whose pg_settings.context is 'user'.
    databases: names of the target's databases. server_major: the target's major version
    (membership options are written for it). The SQL expects standard_conforming_strings on.
    -> {'sql': [str, ...] to run in order, 'created': [role, ...], 'skipped': [str, ...]}"""
    planner = _Planner(statements, existing_roles, user_settings, databases, current_user, server_major)
    for st in statements:
        if st["kind"] not in _KINDS:
            raise ValueError("unknown statement kind %r" % st["kind"])
        getattr(planner, st["kind"])(st)
    return planner.result()
