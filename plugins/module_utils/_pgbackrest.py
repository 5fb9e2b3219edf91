# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pgBackRest, the physical backup and WAL archive of a cluster (Debian's ``pgbackrest``
package): the only place that starts it. A list argv, never a shell; its settings come from
its own configuration (``/etc/pgbackrest/pgbackrest.conf`` and ``conf.d``, written by the role
pitr), so no secret is ever in argv; the repository's credentials are in a 0600 file of the
postgres user.

pgBackRest reads the data directory, so it runs as the cluster's owner: the timers run as
postgres; a module running as root hands it to postgres (``as_user``).

Private to the collection. No Ansible imports: the scheduled runner uses this too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import shutil
import subprocess
import tempfile

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _errors, _pg_cluster

INSTALL_HINT = "install the pgbackrest package on the database host (the role insa.timescaledb_backup.pitr does)"
STANZA_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# pgBackRest's exit status is its error code (src/common/error/error.yaml).
_KIND_OF_CODE = {
    31: "config",  # option-invalid
    32: "config",  # option-invalid-value
    37: "config",  # option-required
    38: "config",  # postmaster-running: restore onto a running cluster
    40: "config",  # path-not-empty
    50: "conflict",  # lock-acquire: another pgBackRest command runs
    55: "not_found",  # file-missing: no stanza yet
    75: "not_found",  # backup-set-invalid: no backup matches the target
}
# Stanza status codes of `info --output=json` (doc: command info).
STATUS_OK, STATUS_MISSING_STANZA_PATH, STATUS_NO_BACKUP, STATUS_MISSING_STANZA_DATA = 0, 1, 2, 3


class PgBackRestError(_errors.OperatorError):
    """pgBackRest exited non-zero; ``code`` is its error code, ``output`` what it wrote."""

    kind = "service"

    def __init__(self, message, code=None, output=None, kind=None):
        super(PgBackRestError, self).__init__(message, kind=kind or _KIND_OF_CODE.get(code, "service"))
        self.code = code
        self.output = output


def find(binary="pgbackrest"):
    path = shutil.which(binary) or ("/usr/bin/" + binary if os.path.exists("/usr/bin/" + binary) else None)
    if path is None:
        raise _errors.ConfigError("physical backups need %s, which is not on this host: %s" % (binary, INSTALL_HINT))
    return path


def check_stanza(stanza):
    if not isinstance(stanza, str) or not STANZA_RE.match(stanza):
        raise _errors.ConfigError(
            "stanza %r: letters, digits, '_', '.' and '-' only (at most 63), starting with a letter or digit"
            % (stanza,)
        )
    return stanza


def argv(stanza, command, options=(), binary=None):
    """The argv of one pgBackRest command: console quiet, errors and warnings on stderr."""
    return (
        [
            binary or find(),
            "--stanza=%s" % check_stanza(stanza),
            "--log-level-console=off",
            "--log-level-stderr=warn",
        ]
        + list(options)
        + [command]
    )


def _user_kwargs(as_user):
    """subprocess arguments that run the command as ``as_user`` (from root), with its groups."""
    return _pg_cluster.as_user_kwargs(as_user) if as_user else {}


def error_lines(text, limit=8):
    """The lines of pgBackRest's output that say what went wrong (ERROR/WARN/HINT), else its end."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    useful = [ln for ln in lines if re.match(r"^(\S+\s+\S+\s+)?(P\d+\s+)?(ERROR|WARN|HINT)", ln) or "ERROR:" in ln]
    return "\n".join((useful or lines)[-limit:])


def run(stanza, command, options=(), as_user=None, timeout=None, binary=None, environ=None):
    """Runs one command; returns its stdout (text). PgBackRestError with its code and the lines
    that explain it. ``environ``: extra environment (never secrets in argv)."""
    cmd = argv(stanza, command, options, binary)
    env = dict(os.environ)
    env.update(environ or {})
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
                timeout=timeout,
                check=False,
                **_user_kwargs(as_user),
            )
        except subprocess.TimeoutExpired:
            raise PgBackRestError("pgbackrest %s did not finish within %s s" % (command, timeout)) from None
        except OSError as e:
            raise PgBackRestError("cannot run pgbackrest %s: %s" % (command, e.strerror)) from None
        err.seek(0)
        errtext = err.read().decode("utf-8", "replace")
    out = proc.stdout.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise PgBackRestError(
            "pgbackrest %s (stanza %s) failed with code %d: %s"
            % (command, stanza, proc.returncode, error_lines(errtext) or error_lines(out) or "no output"),
            code=proc.returncode,
            output=errtext + out,
        )
    return out


def version(binary=None):
    """pgBackRest's version as a tuple of ints (2, 55, 1)."""
    try:
        out = subprocess.run(
            [binary or find(), "version"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=30, check=True
        ).stdout.decode()
    except (OSError, subprocess.SubprocessError) as e:
        raise PgBackRestError("pgbackrest version failed: %s" % e) from None
    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
    if not found:
        raise PgBackRestError("pgbackrest version printed no version: %r" % out[:200])
    return tuple(int(x or 0) for x in found.groups())


def info(stanza, as_user=None, timeout=300, binary=None):
    """The stanza's entry of ``pgbackrest info --output=json`` (status, db, archive, backup)."""
    out = run(stanza, "info", ["--output=json"], as_user=as_user, timeout=timeout, binary=binary)
    return parse_info(out, stanza)


def parse_info(text, stanza):
    try:
        document = json.loads(text)
    except ValueError:
        raise PgBackRestError("pgbackrest info printed no JSON: %r" % (text or "")[:200]) from None
    if not isinstance(document, list):
        raise PgBackRestError("pgbackrest info: a list of stanzas was expected, not %s" % type(document).__name__)
    for entry in document:
        if isinstance(entry, dict) and entry.get("name") == stanza:
            return entry
    raise PgBackRestError("pgbackrest info does not list stanza %s" % stanza, kind="not_found")
