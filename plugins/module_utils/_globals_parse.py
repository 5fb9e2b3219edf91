# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading the roles file of a backup set (``pg_dumpall --globals-only --no-role-passwords``,
PostgreSQL 14 to 17) into statement dicts: the parser half of _globals, which explains why.

Private to the collection. No Ansible imports: the scheduled runner uses this too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import bisect
import re

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _errors
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf

FLAG_ATTRIBUTES = ("SUPERUSER", "INHERIT", "CREATEROLE", "CREATEDB", "LOGIN", "REPLICATION", "BYPASSRLS")
_ATTRIBUTE_WORDS = FLAG_ATTRIBUTES + tuple("NO" + a for a in FLAG_ATTRIBUTES)
# Unquoted, these are keywords, not role names.
_ROLE_KEYWORDS = ("PUBLIC", "NONE", "ALL", "CURRENT_USER", "CURRENT_ROLE", "SESSION_USER")

# Whitespace is PostgreSQL's set, not Python's \s (which also takes U+00A0 and others).
_TOKEN_RE = re.compile(
    r"(?P<space>[ \t\n\r\f\v]+)|(?P<comment>--[^\n]*)|(?P<word>(?:[A-Za-z0-9_.+]|-(?!-))+)|(?P<punct>[;,=()])"
)
# pg_dumpall 17.6+ (and 16.10+, 15.14+, 14.19+) writes these at the start of a line.
_META_RE = re.compile(r"\\(restrict|unrestrict)[ \t]+[A-Za-z0-9]+[ \t\r]*\Z")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SETTING_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
VALUE_WORD_RE = re.compile(r"[A-Za-z0-9_.+-]*[A-Za-z0-9][A-Za-z0-9_.+-]*\Z")
_INTEGER_RE = re.compile(r"-?[0-9]+\Z")
# Whatever follows PASSWORD is left out of messages (quoted, E'', unterminated: all of it).
_PASSWORD_RE = re.compile(r"(PASSWORD\s+)\S.*", re.IGNORECASE)
_NAME_LIMIT = mf.MAX_NAME_BYTES  # PostgreSQL would silently truncate a longer name

REFUSAL_ADVICE = "inspect the file; restore with roles: false to skip roles"


class GlobalsError(_errors.IntegrityError):
    """The file has statements this collection does not apply; nothing of it ran."""


class _NotUnderstood(Exception):
    """One statement is outside what this module reads (the reason is the message)."""


# --- splitting the file into statements -------------------------------------------------------


class _Splitter:
    """Cuts the text into statements (token lists up to ``;``) and meta-command lines, the way
    psql would see them: quotes and ``--`` comments are honoured, a backslash outside quotes
    is a meta-command to the end of the line."""

    def __init__(self, text):
        self.text = text
        self.pos = 0
        self.items = []
        self.newlines = [i for i, c in enumerate(text) if c == "\n"]
        self._new_statement()

    def line(self, pos):
        return bisect.bisect_right(self.newlines, pos - 1) + 1

    def _new_statement(self):
        self.cur = {"tokens": [], "start": None, "error": None}

    def run(self):
        while self.pos < len(self.text):
            if not self._step():
                return self.items  # an unterminated quote swallowed the rest of the file
        if self.cur["tokens"] or self.cur["error"]:
            self._close(len(self.text), self.cur["error"] or "the statement does not end with ;")
        return self.items

    def _step(self):
        c = self.text[self.pos]
        if c == "\\":
            self._backslash()
        elif c in "'\"":
            return self._quoted(c)
        else:
            self._plain()
        return True

    def _plain(self):
        m = _TOKEN_RE.match(self.text, self.pos)
        if m is None:
            self._mark(self.pos, "unexpected character %r" % self.text[self.pos])
            self.pos += 1
            return
        self.pos = m.end()
        if m.lastgroup == "word":
            self._add("word", m.group(), m.start())
        elif m.lastgroup == "punct" and m.group() == ";":
            self._close(m.end(), self.cur["error"])
        elif m.lastgroup == "punct":
            self._add(m.group(), m.group(), m.start())

    def _add(self, kind, value, start):
        if self.cur["start"] is None:
            self.cur["start"] = start
        self.cur["tokens"].append((kind, value, start, self.pos))

    def _mark(self, pos, error):
        if self.cur["start"] is None:
            self.cur["start"] = pos
        self.cur["error"] = self.cur["error"] or error

    def _close(self, end, error):
        if self.cur["start"] is not None:
            start = self.cur["start"]
            self.items.append(
                {"line": self.line(start), "text": self.text[start:end], "tokens": self.cur["tokens"], "error": error}
            )
        self._new_statement()

    def _backslash(self):
        line_start = self.text.rfind("\n", 0, self.pos) + 1
        eol = self.text.find("\n", self.pos)
        eol = len(self.text) if eol < 0 else eol
        text = self.text[self.pos : eol]
        known = line_start == self.pos and self.cur["start"] is None and _META_RE.match(text)
        item = {"line": self.line(self.pos), "text": text, "tokens": None, "error": None}
        if not known:
            # psql runs the rest of the line as a meta-command (\! is a shell), wherever it stands.
            item["error"] = "a psql meta-command: backslash outside a quoted string"
        self.items.append(item)
        self.pos = eol

    def _quoted(self, quote):
        start = self.pos
        value, end = _scan_quoted(self.text, start, quote)
        if end is None:
            error = "unterminated %s" % ("string" if quote == "'" else "quoted name")
            begin = start if self.cur["start"] is None else self.cur["start"]
            self.items.append({"line": self.line(start), "text": self.text[begin:], "tokens": None, "error": error})
            return False
        self.pos = end
        last = self.cur["tokens"][-1] if self.cur["tokens"] else None
        if quote == "'" and last and last[0] == "word" and last[3] == start:
            # E'..' (backslash escapes), B'..', X'..', N'..': not what pg_dumpall writes.
            self._mark(start, "prefixed string %s'...'" % last[1])
        if "\x00" in value:
            self._mark(start, "NUL character in a quoted value")
        self._add("string" if quote == "'" else "ident", value, start)
        return True


def _scan_quoted(text, start, quote):
    """Reads a quoted string or name with doubled quotes as escapes.
    -> (value, position after it), or (None, None) if it never ends."""
    parts = []
    i = start + 1
    while True:
        j = text.find(quote, i)
        if j < 0:
            return None, None
        parts.append(text[i:j])
        if text.startswith(quote, j + 1):
            parts.append(quote)
            i = j + 2
        else:
            return "".join(parts), j + 1


# --- reading one statement ----------------------------------------------------------------------


class _Tokens:
    """A cursor over one statement's tokens."""

    def __init__(self, tokens):
        self.tokens = tokens
        self.i = 0

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self):
        self.i += 1
        return self.tokens[self.i - 1]

    def keyword(self, *words):
        t = self.peek()
        if t and t[0] == "word" and t[1].upper() in words:
            return self.take()[1].upper()
        return None

    def expect(self, *words):
        kw = self.keyword(*words)
        if kw is None:
            raise _NotUnderstood("expected %s at %s" % (" or ".join(words), self.where()))
        return kw

    def punct(self, char):
        t = self.peek()
        if t and t[0] == char:
            self.take()
            return True
        return False

    def where(self):
        t = self.peek()
        return "the end" if t is None else "%r" % t[1]

    def end(self):
        if self.peek() is not None:
            raise _NotUnderstood("unexpected %s" % self.where())

    def name(self):
        """An identifier: quoted as written, unquoted folded to lower case (ASCII only, like PostgreSQL)."""
        t = self.peek()
        if t and t[0] == "ident":
            value = t[1]
        elif t and t[0] == "word" and _IDENT_RE.match(t[1]):
            value = t[1].lower()
        else:
            raise _NotUnderstood("expected a name at %s" % self.where())
        if not value or len(value.encode("utf-8")) > _NAME_LIMIT:
            raise _NotUnderstood("name %r is empty or longer than %d bytes" % (value, _NAME_LIMIT))
        self.take()
        return value

    def role(self):
        t = self.peek()
        if t and t[0] == "word" and t[1].upper() in _ROLE_KEYWORDS:
            raise _NotUnderstood("%s is not a role name" % t[1].upper())
        return self.name()

    def string(self):
        t = self.peek()
        if not t or t[0] != "string":
            raise _NotUnderstood("expected a quoted string at %s" % self.where())
        return self.take()[1]

    def string_or_null(self):
        return None if self.keyword("NULL") else self.string()

    def integer(self):
        t = self.peek()
        if not t or t[0] != "word" or not _INTEGER_RE.match(t[1]):
            raise _NotUnderstood("expected a number at %s" % self.where())
        return int(self.take()[1])

    def has_keyword(self, word):
        return any(t[0] == "word" and t[1].upper() == word for t in self.tokens[self.i :])


def _statement(tok, ctx):
    first = tok.keyword("CREATE", "ALTER", "GRANT", "REVOKE", "COMMENT", "SECURITY", "SET", "RESET")
    if first in ("CREATE", "ALTER"):
        if tok.keyword("TABLESPACE"):
            return _unapplied("tablespace", ctx)
        tok.expect("ROLE")
        return _create_role(tok) if first == "CREATE" else _alter_role(tok)
    if first in ("GRANT", "REVOKE"):
        if tok.has_keyword("ON"):
            return _object_grant(tok, ctx)
        if first == "GRANT":
            return _grant_role(tok)
    if first == "COMMENT":
        return _comment(tok, ctx)
    if first == "SECURITY":
        return _security_label(tok, ctx)
    if first in ("SET", "RESET"):
        return _session(tok, first, ctx)
    raise _NotUnderstood("not a statement this collection applies")


def _unapplied(kind, ctx):
    return {"kind": kind, "text": ctx["text"]}


def _create_role(tok):
    role = tok.role()
    tok.end()
    return {"kind": "create_role", "role": role}


def _alter_role(tok):
    role = tok.role()
    database = None
    if tok.keyword("IN"):
        tok.expect("DATABASE")
        database = tok.name()
    t = tok.peek()
    if database is not None or (t and t[0] == "word" and t[1].upper() in ("SET", "RESET")):
        return _role_setting(tok, role, database)
    st = {"kind": "alter_role", "role": role, "attributes": [], "connection_limit": None}
    st.update(valid_until=None, password=False)
    tok.keyword("WITH")
    while tok.peek() is not None:
        _role_attribute(tok, st)
    return st


def _role_attribute(tok, st):
    kw = tok.keyword(*(_ATTRIBUTE_WORDS + ("CONNECTION", "VALID", "PASSWORD")))
    if kw is None:
        raise _NotUnderstood("unknown role attribute %s" % tok.where())
    if kw == "CONNECTION":
        tok.expect("LIMIT")
        st["connection_limit"] = tok.integer()
    elif kw == "VALID":
        tok.expect("UNTIL")
        st["valid_until"] = tok.string()
    elif kw == "PASSWORD":
        # Only whether there was one is kept: the hash is never set, so it is not carried around.
        st["password"] = tok.string_or_null() is not None
    else:
        st["attributes"].append(kw)


def _role_setting(tok, role, database):
    st = {"kind": "role_setting", "role": role, "database": database, "name": None, "values": None, "reset": False}
    if tok.expect("SET", "RESET") == "RESET":
        st["reset"] = True
        if not tok.keyword("ALL"):
            st["name"] = _setting_name(tok)
        tok.end()
        return st
    st["name"] = _setting_name(tok)
    if not tok.keyword("TO") and not tok.punct("="):
        raise _NotUnderstood("expected TO at %s" % tok.where())
    st["values"] = _values(tok)
    return st


def _setting_name(tok):
    t = tok.peek()
    if not t or t[0] not in ("word", "ident") or not _SETTING_RE.match(t[1]):
        raise _NotUnderstood("expected a setting name at %s" % tok.where())
    tok.take()
    return t[1].lower() if t[0] == "word" else t[1]


def _values(tok):
    """``'a', 'b'`` or ``100`` or ``DEFAULT``: what SET accepts, read back as plain values."""
    values = []
    while True:
        t = tok.peek()
        if t and t[0] in ("string", "ident"):
            # A quoted name is a string value to SET, case kept: "$user" is '$user'.
            values.append({"string": t[1]})
        elif t and t[0] == "word" and VALUE_WORD_RE.match(t[1]):
            values.append({"word": t[1]})
        else:
            raise _NotUnderstood("expected a setting value at %s" % tok.where())
        tok.take()
        if not tok.punct(","):
            tok.end()
            return values


def _grant_role(tok):
    st = {"kind": "grant_role", "granted": tok.role()}
    tok.expect("TO")
    st.update(member=tok.role(), admin=False, inherit=None, set=None, grantor=None)
    if tok.keyword("WITH"):
        _grant_options(tok, st)
    if tok.keyword("GRANTED"):
        tok.expect("BY")
        st["grantor"] = tok.role()
    tok.end()
    return st


def _grant_options(tok, st):
    """``ADMIN OPTION`` (PostgreSQL 15 and older) or ``ADMIN TRUE, INHERIT FALSE, SET TRUE`` (16+)."""
    seen = set()
    while True:
        option = tok.expect("ADMIN", "INHERIT", "SET")
        if option in seen:
            raise _NotUnderstood("%s given twice" % option)
        seen.add(option)
        value = tok.expect("OPTION", "TRUE", "FALSE") != "FALSE"
        st[option.lower()] = value
        if not tok.punct(","):
            return


def _object_grant(tok, ctx):
    """Privileges on tablespaces or (15+) configuration parameters; nothing else is in a globals file."""
    while tok.peek() is not None and tok.keyword("ON") is None:
        tok.take()
    kind = tok.expect("TABLESPACE", "PARAMETER")
    return _unapplied("tablespace" if kind == "TABLESPACE" else "parameter_grant", ctx)


def _comment(tok, ctx):
    tok.expect("ON")
    if tok.expect("ROLE", "TABLESPACE") == "TABLESPACE":
        return _unapplied("tablespace", ctx)
    st = {"kind": "comment_role", "role": tok.role()}
    tok.expect("IS")
    st["comment"] = tok.string_or_null()
    tok.end()
    return st


def _security_label(tok, ctx):
    tok.expect("LABEL")
    if tok.keyword("FOR"):
        tok.name()
    tok.expect("ON")
    tok.expect("ROLE", "TABLESPACE")
    tok.name()
    tok.expect("IS")
    tok.string_or_null()
    tok.end()
    return _unapplied("security_label", ctx)


def _session(tok, first, ctx):
    """``SET name = value`` and ``SET/RESET SESSION AUTHORIZATION``: ignored, the restore uses
    its own session. Two settings change how the rest of the file reads, so they are checked."""
    if tok.keyword("SESSION"):
        tok.expect("AUTHORIZATION")
        if first == "SET" and not tok.keyword("DEFAULT"):
            if tok.peek() and tok.peek()[0] == "string":
                tok.string()
            else:
                tok.role()
        tok.end()
        return {"kind": "session", "text": ctx["text"]}
    if first == "RESET":
        raise _NotUnderstood("not a statement this collection applies")
    name = _setting_name(tok)
    if not tok.keyword("TO") and not tok.punct("="):
        raise _NotUnderstood("expected = at %s" % tok.where())
    values = _values(tok)
    _check_session_setting(name.lower(), values, ctx)
    return {"kind": "session", "text": ctx["text"], "name": name, "values": values}


def _check_session_setting(name, values, ctx):
    value = (values[0].get("string") or values[0].get("word") or "").lower() if len(values) == 1 else None
    if name == "standard_conforming_strings" and value != "on":
        # With it off, backslashes in strings are escapes: the strings here would mean something else.
        raise _NotUnderstood("standard_conforming_strings is not on")
    if name == "client_encoding" and value not in ("utf8", "utf-8", "unicode") and not ctx["ascii"]:
        raise _NotUnderstood("the file is written in %s, not UTF8: convert it to UTF8 first" % value)


# --- parse ---------------------------------------------------------------------------------------


def snippet(text, limit=80):
    flat = _PASSWORD_RE.sub(r"\1'...'", " ".join(text.split()))
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _read_item(item, ascii_only):
    """-> a statement dict; raises _NotUnderstood."""
    if item["error"]:
        raise _NotUnderstood(item["error"])
    if item["tokens"] is None:
        return {"kind": "session", "line": item["line"], "text": item["text"].strip()}
    ctx = {"text": " ".join(item["text"].split()), "ascii": ascii_only}
    tok = _Tokens(item["tokens"])
    st = _statement(tok, ctx)
    st["line"] = item["line"]
    return st


def parse(text):
    """-> list of statement dicts, each with 'line' (1-based, where it starts), 'kind' and its fields:

    create_role: role. alter_role: role, attributes (upper-case keywords in file order),
    connection_limit (int or None), valid_until (str or None), password (bool; never the hash).
    role_setting: role, database (None: all databases), name (None with reset: RESET ALL),
    values (list of {'string': str} or {'word': str}; None with reset), reset (bool).
    grant_role: granted, member, admin (bool), inherit, set (bool or None: not given), grantor.
    comment_role: role, comment (None: IS NULL). tablespace, parameter_grant, security_label:
    text (never applied). session: SET lines, \\restrict / \\unrestrict (ignored).

    Raises GlobalsError naming every statement not understood (line, first 80 characters, why)."""
    ascii_only = all(ord(c) < 128 for c in text)
    statements, problems = [], []
    for item in _Splitter(text).run():
        try:
            statements.append(_read_item(item, ascii_only))
        except _NotUnderstood as e:
            problems.append("line %d: %s (%s)" % (item["line"], snippet(item["text"]), e))
    if problems:
        raise GlobalsError(
            "the roles file has statements this collection does not apply, so none of it was run: %s. "
            "What to do: %s" % ("; ".join(problems), REFUSAL_ADVICE)
        )
    return statements
