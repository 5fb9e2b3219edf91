# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The PostgreSQL clusters of this host, for the physical paths (point-in-time restore, the
drill): start and stop a Debian cluster (pg_ctlcluster), a scratch server (pg_ctl), one query as
the cluster's owner over its Unix socket, and what the server last logged. Part of the
PostgreSQL layer with _pg, whose tool errors it raises.

Private to the collection. No Ansible imports.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import subprocess

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _errors
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._pg import ToolError, stderr_tail, tool_error


def cluster_control(cluster, action, timeout=3600):
    """Starts or stops a Debian cluster (``17/main``) with pg_ctlcluster, which hands it to
    systemd (postgresql@17-main) where systemd runs. ToolError with what it printed."""
    version, _sep, name = cluster.partition("/")
    if action not in ("start", "stop") or not version.isdigit() or not name:
        raise ValueError("cluster %r, action %r" % (cluster, action))
    argv = ["pg_ctlcluster", version, name, action]
    if action == "stop":
        argv += ["--", "-m", "fast"]
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ToolError("pg_ctlcluster %s %s %s failed: %s" % (version, name, action, e)) from None
    text = (proc.stderr + proc.stdout).decode("utf-8", "replace")
    # Stopping a cluster that is not running is what was asked for.
    if proc.returncode != 0 and not (action == "stop" and "is not running" in text):
        raise ToolError(
            "pg_ctlcluster %s %s %s exited with status %d: %s"
            % (version, name, action, proc.returncode, stderr_tail(text)),
            stderr=text,
        )


def scratch_server(action, data_directory, version, timeout=3600, settings=None):
    """Starts (waiting until it accepts connections) or stops (fast) a server of major
    ``version`` on a scratch data directory with pg_ctl: the physical drill's throw-away cluster.
    ``settings`` go on the server's command line, above every configuration file (so that a
    restored postgresql.auto.conf cannot turn archiving or TCP back on)."""
    if action not in ("start", "stop"):
        raise ValueError(action)
    argv = ["/usr/lib/postgresql/%d/bin/pg_ctl" % int(version), action, "-D", data_directory, "-s"]
    if action == "start":
        argv += ["-w", "-t", str(int(timeout)), "-l", os.path.join(data_directory, "drill.log")]
        options = []
        for name, value in sorted((settings or {}).items()):
            # pg_ctl hands -o to a shell: only plain values.
            if not re.match(r"^[A-Za-z0-9_./-]*$", str(value)) or not re.match(r"^[a-z_.]+$", name):
                raise ValueError("setting %s=%r cannot go on the command line" % (name, value))
            options.append("-c %s=%s" % (name, value if value != "" else "''"))
        if options:
            argv += ["-o", " ".join(options)]
    else:
        argv += ["-m", "fast", "-w"]
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout + 60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ToolError("pg_ctl %s of %s failed: %s" % (action, data_directory, e)) from None
    if proc.returncode != 0:
        text = (proc.stderr + proc.stdout).decode("utf-8", "replace")
        raise tool_error(argv, proc.returncode, text)


def as_user_kwargs(owner):
    """subprocess arguments that run a command as the OS user ``owner`` (from root), with its
    groups; none when this process already runs as that user."""
    import grp
    import pwd

    try:
        entry = pwd.getpwnam(owner)
    except KeyError:
        raise _errors.ConfigError("there is no OS user %r on this host (the cluster's owner)" % (owner,)) from None
    if os.geteuid() == entry.pw_uid:
        return {}
    groups = sorted({g.gr_gid for g in grp.getgrall() if entry.pw_name in g.gr_mem} | {entry.pw_gid})
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": groups, "cwd": entry.pw_dir or "/"}


def local_query(sql, owner, port, version, socket_dir="/var/run/postgresql", timeout=60):
    """One value of a query on this host's cluster over its Unix socket, as the OS user ``owner``
    (peer authentication): what a restore waits with, whatever logins the restored cluster has."""
    argv = ["/usr/lib/postgresql/%d/bin/psql" % int(version), "-XAtq", "-h", socket_dir, "-p", str(int(port))]
    argv += ["-d", "postgres", "-c", sql]
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "PGCONNECT_TIMEOUT": "5", "PGAPPNAME": "insa.timescaledb_backup"}
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, env=env, check=False, **as_user_kwargs(owner))
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ToolError("psql as %s failed: %s" % (owner, e)) from None
    if proc.returncode != 0:
        raise tool_error(argv, proc.returncode, proc.stderr.decode("utf-8", "replace"))
    return proc.stdout.decode("utf-8", "replace").strip()


def cluster_log_tail(cluster, limit=6):
    """What the server of a Debian cluster last logged of note (FATAL, PANIC, ERROR lines first)."""
    version, _sep, name = cluster.partition("/")
    path = "/var/log/postgresql/postgresql-%s-%s.log" % (version, name)
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 65536))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError as e:
        return "its log %s cannot be read (%s)" % (path, e.strerror)
    noted = [ln for ln in lines if any(w in ln for w in ("FATAL", "PANIC", "ERROR"))]
    return "; ".join((noted or lines)[-limit:]) + " (%s)" % path
