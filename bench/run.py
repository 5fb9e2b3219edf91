"""make bench: this collection's backup and restore against the floor and the old pipeline,
measured side by side in one run on the rig (docs/PERFORMANCE.md is written from it).

    make bench                                   # ~2 GB dataset, 3 repetitions
    . .local/env.sh && .venv/bin/python bench/run.py --size 0.5 --repeat 1 --no-doc
    BENCH_ARGS="--fleet 4" make bench            # and backup.yml across 4 hosts against 1
    . .local/env.sh && .venv/bin/python bench/run.py --only fleet --fleet 4 --fleet-size 0.2 --repeat 1 --no-doc

Paths measured, each --repeat times (median and min reported):
  floor        pg_dump -Fc -Z0 > /dev/null: the cost of reading the data at all
  old          the replaced scripts: pg_dump -Fc | gzip -6, md5sum, gzip -t, SDK-default upload
  backup.yml   this collection on demand (dump, counts, verify, upload, prune + Ansible)
  timer        the nightly tsdb-backup.service, the same pipeline without Ansible
  pg_restore   serial pg_restore of the same archive with pre/post restore, into a new database
  restore.yml  from Azure into a new database, and over the existing one (with its safety backup)
Backups are given as ratios to the floor, restores to serial pg_restore: absolute times on a
shared 2-core VM vary by 2x between machines, ratios within one run do not. No timing is
asserted anywhere; this only measures and reports.

--fleet N adds a fleet of N hosts: the rig's host and N-1 more containers beside it
(tests/rig/extra-host.sh, the same Azurite), each seeded with the same dataset at --fleet-size, the
agent set up on all; then, --repeat times: the floor on 1 host and on all N at once, backup.yml on
1 host and on all N in one play. Its own table (docs/PERFORMANCE.md, between the fleet markers);
the extra containers are removed at the end, also on failure or Ctrl-C.
"""

import argparse
import concurrent.futures
import json
import os
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import bench_pitr  # noqa: E402
import bench_rig as rig  # noqa: E402

DB = "bench_iot"
CONTAINER = "tsdb-bench"  # its own Azure container: the demo's listing stays the demo's


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=float, default=2.0, help="dataset size in GB (default 2.0, ~9.2 M rows)")
    p.add_argument("--repeat", type=int, default=3, help="repetitions of each path (default 3)")
    p.add_argument(
        "--only",
        default="",
        help="comma-separated paths to run: floor,old,backup,timer,restore,physical; scale (with --scale), fleet "
        "(with --fleet)",
    )
    p.add_argument("--reseed", action="store_true", help="drop and generate the dataset again")
    p.add_argument("--doc", default=os.path.join(REPO, "docs", "PERFORMANCE.md"), help="report to write")
    p.add_argument("--no-doc", action="store_true", help="print only")
    p.add_argument("--json", help="also write the raw figures here")
    p.add_argument(
        "--scale",
        default="",
        help="comma-separated sizes in GB: the floor, backup.yml, serial pg_restore, restore.yml into a new "
        "database and the transfers' peak RSS once at each size (a table of growth, written after the main one)",
    )
    p.add_argument(
        "--fleet",
        type=int,
        default=0,
        help="also measure backup.yml across this many hosts against 1 (the rig's host and N-1 containers "
        "started for it, removed at the end); off by default",
    )
    p.add_argument(
        "--fleet-size", type=float, default=0.5, help="dataset size in GB on each host of the fleet (default 0.5)"
    )
    a = p.parse_args(argv)
    if a.fleet == 1 or a.fleet < 0:
        p.error("--fleet needs at least 2 hosts")
    if "fleet" in a.only.split(",") and not a.fleet:
        p.error("--only fleet needs --fleet N")
    return a


def cpu_times():
    """(busy, total) jiffies of all cores from /proc/stat: the rig's containers, Azurite and
    Ansible share this kernel, so this is the whole machine's load."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def cores_busy(before, after):
    """How many cores were busy on average between two cpu_times()."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return (os.cpu_count() or 1) * busy / total if total else 0.0


def azurite_cpu():
    """CPU seconds the rig's Azurite (one Node.js process on the same cores) has used so far; 0
    when its PID is not known. The emulator's share of a path is work a real Azure does elsewhere."""
    try:
        with open(os.path.join(REPO, ".local", "azurite.pid")) as f:
            pid = int(f.read().strip())
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def timed(fn, *args):
    t0 = time.monotonic()
    out = fn(*args)
    return time.monotonic() - t0, out


def took(fn, *args):
    return timed(fn, *args)[0]


class Figures:
    """Seconds per path and repetition, and what each step of a path took."""

    def __init__(self, db=None):
        self.db = db or DB
        self.runs, self.steps, self.facts = {}, {}, {}
        self.cpu, self.current = {}, None  # cores busy on average during each path
        self.azurite = {}  # CPU seconds of Azurite during each path

    def add(self, path, seconds, steps=None):
        self.runs.setdefault(path, []).append(seconds)
        self.current = path
        for name, value in (steps or {}).items():
            self.steps.setdefault(path, {}).setdefault(name, []).append(value)

    def median(self, path):
        return statistics.median(self.runs[path]) if self.runs.get(path) else None


def floor(f):
    seconds = took(rig.pg_tool, "pg_dump -Fc -Z0 -d %s > /dev/null" % f.db)
    f.add("floor", seconds)


def old_pipeline(f):
    steps = {}
    old = rig.WORK + "/old.dump.gz"
    steps["pg_dump | gzip -6"] = took(
        rig.pg_tool, "install -d -m 0700 %s && pg_dump -Fc -d %s | gzip -6 > %s" % (rig.WORK, f.db, old)
    )
    steps["md5sum"] = took(rig.pg_tool, "md5sum %s > %s.md5" % (old, old))
    steps["gzip -t"] = took(rig.pg_tool, "gzip -t %s" % old)
    steps["upload (SDK defaults)"] = took(rig.sdk_default_upload, old, CONTAINER)
    f.add("old", sum(steps.values()), steps)
    f.facts["old_bytes"] = int(rig.pg_tool("stat -c %%s %s" % old).strip())
    rig.pg_tool("rm -rf %s" % rig.WORK)


def backup_playbook(f):
    seconds, result = timed(rig.backup_playbook, f.db, CONTAINER)
    steps = dict(result.get("timings") or {})
    steps["ansible overhead"] = max(0.0, seconds - (result.get("duration_seconds") or 0))
    f.add("backup.yml", seconds, steps)
    manifest = rig.newest_manifest(f.db)
    f.facts["stored_bytes"] = manifest["archive"]["size_bytes"] + manifest.get("globals", {}).get("size_bytes", 0)
    f.facts["backup_id"] = manifest["backup_id"]
    f.facts["read_during_dump"] = ", ".join(result.get("read_during_dump") or []) or "nothing"


def bench_recipient():
    """A recipient whose identity is thrown away: the bench measures encryption, never decrypts."""
    identity = subprocess.run(["age-keygen"], capture_output=True, check=True, text=True).stdout
    return subprocess.run(
        ["age-keygen", "-y"], input=identity, capture_output=True, check=True, text=True
    ).stdout.strip()


def backup_encrypted(f):
    """backup.yml with encryption to one age recipient (docs/SECURITY.md), against backup.yml."""
    recipient = f.facts.setdefault("recipient", bench_recipient())
    seconds, result = timed(lambda: rig.backup_playbook(f.db, CONTAINER, tsdb_backup_encryption_recipients=[recipient]))
    steps = dict(result.get("timings") or {})
    steps["ansible overhead"] = max(0.0, seconds - (result.get("duration_seconds") or 0))
    f.add("backup.yml encrypted", seconds, steps)
    manifest = rig.newest_manifest(f.db)
    f.facts["stored_bytes encrypted"] = manifest["encryption"]["archive"]["size_bytes"]
    f.facts["read_during_dump encrypted"] = ", ".join(result.get("read_during_dump") or []) or "nothing"


def backup_parallel(f):
    """backup.yml with one pg_dump worker per core (directory format)."""
    seconds, result = timed(lambda: rig.backup_playbook(f.db, CONTAINER, tsdb_backup_dump_jobs=0))
    steps = dict(result.get("timings") or {})
    steps["ansible overhead"] = max(0.0, seconds - (result.get("duration_seconds") or 0))
    f.add("backup.yml -j", seconds, steps)
    f.facts["stored_bytes -j"] = rig.newest_manifest(f.db)["archive"]["size_bytes"]


def timer(f):
    seconds = took(rig.start_unit, "tsdb-backup.service")
    f.add("timer", seconds)


def serial_restore(f):
    archive = rig.newest_archive(f.db)
    steps = rig.serial_pg_restore(archive, f.db + "_serial")
    f.add("pg_restore", sum(steps.values()), steps)
    rig.drop_databases(f.db + "_serial")


def restore_phases(seconds, phases):
    """The restore's phases as steps: restore_seconds covers pg_restore, ANALYZE and the counts;
    the safety backup runs beside it (not added); the rest is Ansible and the checks."""
    steps = {name: phases[name] for name in ("download", "verify", "pg_restore", "analyze", "swap") if name in phases}
    if "safety_backup" in phases:
        steps["safety backup (beside the restore)"] = phases["safety_backup"]
    inside = sum(phases.get(n) or 0 for n in ("download", "verify", "restore", "swap"))
    steps["ansible and the rest"] = max(0.0, seconds - inside)
    return steps


def restore_playbook(f):
    seconds, phases = timed(rig.restore_playbook, f.db, f.db + "_new", CONTAINER)
    f.add("restore.yml new", seconds, restore_phases(seconds, phases))
    rig.drop_databases(f.db + "_new", like=f.db + "_new__")


def restore_over(f):
    seconds, phases = timed(rig.restore_playbook, f.db, f.db, CONTAINER)
    f.add("restore.yml over", seconds, restore_phases(seconds, phases))
    rig.drop_databases(like=f.db + "__pre_restore_")


PATHS = (
    ("floor", floor),
    ("old", old_pipeline),
    ("backup", backup_playbook),
    ("backup", backup_encrypted),
    ("backup", backup_parallel),
    ("timer", timer),
    ("restore", serial_restore),
    ("restore", restore_playbook),
    ("restore", restore_over),
)


def table(f):
    """Rows of (path, median, min, ratio, baseline name)."""
    rows = []
    for path, base in (
        ("floor", "floor"),
        ("old", "floor"),
        ("backup.yml", "floor"),
        ("backup.yml encrypted", "backup.yml"),
        ("backup.yml -j", "floor"),
        ("timer", "floor"),
        ("pg_restore", "pg_restore"),
        ("restore.yml new", "pg_restore"),
        ("restore.yml over", "pg_restore"),
        ("pgBackRest full", "floor"),
        ("restore.yml physical", "pg_restore"),
        ("restore.yml physical", "restore.yml new"),
    ):
        if not f.runs.get(path):
            continue
        ratio = f.median(path) / f.median(base) if f.median(base) else None
        rows.append((path, f.median(path), min(f.runs[path]), ratio, base))
    return rows


def render(f, args, dataset):
    lines = [
        "| path | median s | min s | ratio | to | cores busy (of %d) | Azurite CPU s |" % (os.cpu_count() or 1),
        "|---|---|---|---|---|---|---|",
    ]
    for path, med, low, ratio, base in table(f):
        cpu = "%.1f" % statistics.median(f.cpu[path]) if f.cpu.get(path) else "-"
        emulator = "%.1f" % statistics.median(f.azurite[path]) if f.azurite.get(path) else "-"
        lines.append(
            "| %s | %.1f | %.1f | %s | %s | %s | %s |"
            % (path, med, low, "%.2f" % ratio if ratio else "-", base, cpu, emulator)
        )
    if "old_bytes" in f.facts and "stored_bytes" in f.facts:
        lines.append(
            "| stored bytes: old %s, this collection %s | | | %.2f | old |"
            % (
                rig.human(f.facts["old_bytes"]),
                rig.human(f.facts["stored_bytes"]),
                f.facts["stored_bytes"] / f.facts["old_bytes"],
            )
        )
    if "old_bytes" in f.facts and "stored_bytes -j" in f.facts:
        lines.append(
            "| stored bytes with -j: %s | | | %.2f | old |"
            % (rig.human(f.facts["stored_bytes -j"]), f.facts["stored_bytes -j"] / f.facts["old_bytes"])
        )
    steps = []
    for path, named in sorted(f.steps.items()):
        parts = ", ".join("%s %.1f s" % (n, statistics.median(v)) for n, v in named.items())
        steps.append("- %s: %s" % (path, parts))
    if "read_during_dump" in f.facts:
        steps.append("- backup.yml read the archive while pg_dump wrote it for: %s" % f.facts["read_during_dump"])
    if "read_during_dump encrypted" in f.facts:
        steps.append(
            "- backup.yml encrypted: age ran while pg_dump wrote the archive; read during the dump for: %s; "
            "%s stored" % (f.facts["read_during_dump encrypted"], rig.human(f.facts["stored_bytes encrypted"]))
        )
    if "pgbackrest_bytes" in f.facts:
        steps.append("- pgBackRest full: %s in the repository (zstd)" % rig.human(f.facts["pgbackrest_bytes"]))
    for name, value in sorted(f.facts.items()):
        if name.startswith("rss_"):
            steps.append("- peak RSS of %s: %s" % (name[4:], rig.human(value)))
    return "\n".join(
        [
            "Dataset: %s. Machine: %s. %d repetition(s) of each path, medians and minima in seconds."
            % (dataset, rig.machine(), args.repeat),
            "",
        ]
        + lines
        + ["", "Where the time goes (medians):", ""]
        + steps
    )


SCALE_PATHS = (floor, backup_playbook, serial_restore)


def scale(args):
    """One run of the scale paths per size, each on its own dataset (bench_iot_<size>)."""
    rows = []
    for size in [float(x) for x in args.scale.split(",") if x]:
        f = Figures("%s_%s" % (DB, str(size).replace(".", "_")))
        dataset = rig.ensure_dataset(f.db, size, args.reseed)
        for fn in SCALE_PATHS:
            print("bench: scale %s GB: %s ..." % (size, fn.__name__), flush=True)
            fn(f)
        seconds = took(rig.restore_playbook, f.db, f.db + "_new", CONTAINER)
        f.add("restore.yml new", seconds)
        rig.drop_databases(f.db + "_new", like=f.db + "_new__")
        f.facts.update(rig.transfer_rss(f.db, CONTAINER))
        rows.append((size, dataset, f))
    return render_scale(rows)


def render_scale(rows):
    lines = [
        "Growth with the data (one run per size):",
        "",
        "| size | dataset | floor s | backup.yml s (ratio) | pg_restore s | restore.yml new s (ratio) "
        "| peak RSS upload / download |",
        "|---|---|---|---|---|---|---|",
    ]
    for size, dataset, f in rows:
        fl, bk, pr, rs = (f.median(p) for p in ("floor", "backup.yml", "pg_restore", "restore.yml new"))
        lines.append(
            "| %s GB | %s | %.1f | %.1f (%.2f) | %.1f | %.1f (%.2f) | %s / %s |"
            % (
                size,
                dataset,
                fl,
                bk,
                bk / fl,
                pr,
                rs,
                rs / pr,
                rig.human(f.facts["rss_upload"]),
                rig.human(f.facts["rss_download"]),
            )
        )
    return "\n".join(lines)


FLEET_DB = DB + "_fleet"


def at_once(fn, items):
    """fn(item) for every item at the same time, in threads; the results in order. On an error or
    Ctrl-C, what has not started is cancelled and the exception goes on at once."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(items))
    try:
        results = [job.result() for job in [pool.submit(fn, item) for item in items]]
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return results


def fleet_floor(f, hosts, path):
    """The floor on every host of hosts at the same time: the time until the last one is done."""
    command = "pg_dump -Fc -Z0 -d %s > /dev/null" % f.db
    seconds, each = timed(at_once, lambda host: took(rig.pg_tool, command, host), hosts)
    f.add(path, seconds, {"fastest host": min(each), "slowest host": max(each)} if len(hosts) > 1 else None)


def fleet_backup(f, fleet, group, path):
    """backup.yml in one play on the hosts of group; steps: the median host's, and Ansible's own
    time (the play's beyond the slowest host's agent run)."""
    seconds, results = timed(rig.fleet_backup_playbook, f.db, CONTAINER, fleet, group)
    durations = [r.get("duration_seconds") or 0 for r in results.values()]
    steps = {}
    for name in sorted({n for r in results.values() for n in (r.get("timings") or {})}):
        steps[name] = statistics.median([(r.get("timings") or {}).get(name, 0) for r in results.values()])
    if len(results) > 1:
        steps["slowest host's agent run"] = max(durations)
    steps["ansible overhead"] = max(0.0, seconds - max(durations))
    f.add(path, seconds, steps)


def fleet(args):
    """backup.yml across args.fleet hosts against 1, each against its own floor."""
    n = args.fleet
    f = Figures(FLEET_DB)
    with rig.Fleet(n) as hosts:
        print("bench: fleet of %d hosts: %s" % (n, ", ".join(map(repr, hosts.hosts))), flush=True)
        print("bench: fleet: seeding %s GB on each host ..." % args.fleet_size, flush=True)
        datasets = at_once(lambda host: rig.ensure_dataset(f.db, args.fleet_size, args.reseed, host), hosts.hosts)
        print("bench: fleet: setup.yml on %d hosts ..." % n, flush=True)
        rig.setup_fleet(f.db, CONTAINER, hosts)
        # No hourly archive or nightly run in the middle of a measurement (setup.yml at the end
        # starts the rig host's timers again; the other hosts are removed).
        at_once(rig.stop_timers, hosts.hosts)
        runs = (
            (fleet_floor, [hosts.main], "floor 1"),
            (fleet_floor, hosts.hosts, "floor N"),
            (fleet_backup, hosts, "bench_one", "backup.yml 1"),
            (fleet_backup, hosts, "bench_fleet", "backup.yml N"),
        )
        for repetition in range(args.repeat):
            print("bench: fleet (%d of %d) ..." % (repetition + 1, args.repeat), flush=True)
            for fn, *rest in runs:
                before = cpu_times()
                fn(f, *rest)
                f.cpu.setdefault(rest[-1], []).append(cores_busy(before, cpu_times()))
        machine = "%s, and %s" % (rig.machine(), ", ".join(h.container for h in hosts.extras))
    dataset = "; ".join(sorted(set(datasets)))  # one line: the same rows everywhere
    return f, render_fleet(f, args, dataset, machine)


def render_fleet(f, args, dataset, machine):
    n = args.fleet
    med = f.median
    rows = (
        ("floor, 1 host", "floor 1", None),
        ("floor, %d hosts at once" % n, "floor N", None),
        ("backup.yml, 1 host", "backup.yml 1", "floor 1"),
        ("backup.yml, %d hosts in one play" % n, "backup.yml N", "floor N"),
    )
    one = {"floor 1": "floor 1", "floor N": "floor 1", "backup.yml 1": "backup.yml 1", "backup.yml N": "backup.yml 1"}
    lines = [
        "Dataset on each of the %d hosts: %s. Machine: %s. %d repetition(s), medians and minima in seconds."
        % (n, dataset, machine, args.repeat),
        "",
        "| run | median s | min s | to its floor | to 1 host | cores busy (of %d) |" % (os.cpu_count() or 1),
        "|---|---|---|---|---|---|",
    ]
    for label, path, base in rows:
        lines.append(
            "| %s | %.1f | %.1f | %s | %.2f | %s |"
            % (
                label,
                med(path),
                min(f.runs[path]),
                "%.2f" % (med(path) / med(base)) if base else "-",
                med(path) / med(one[path]),
                "%.1f" % statistics.median(f.cpu[path]) if f.cpu.get(path) else "-",
            )
        )
    lines += [
        "",
        "backup.yml on %d hosts takes %.2fx backup.yml on 1 host (goal: at most 1.5x); %d pg_dumps at once alone "
        "take %.2fx one, on %d cores (cores busy: the whole machine's, from /proc/stat)."
        % (n, med("backup.yml N") / med("backup.yml 1"), n, med("floor N") / med("floor 1"), os.cpu_count()),
        "",
        "Where the time goes (medians; the %d-host play: the median host's steps):" % n,
        "",
    ]
    for path in ("backup.yml 1", "backup.yml N", "floor N"):
        parts = ", ".join("%s %.1f s" % (name, statistics.median(v)) for name, v in f.steps.get(path, {}).items())
        label = {"backup.yml 1": "backup.yml, 1 host", "backup.yml N": "backup.yml, %d hosts" % n}.get(
            path, "floor, %d hosts at once" % n
        )
        lines.append("- %s: %s" % (label, parts))
    return "\n".join(lines)


def physical(f, args):
    """The physical paths on a host of their own (bench_pitr): a full pgBackRest backup of the
    same dataset, and restore.yml -e restore_method=physical to the end of the archive."""
    with bench_pitr.PitrHost(f.db, CONTAINER) as p:
        rig.ensure_dataset(f.db, args.size, False, host=p.host)
        p.setup()
        for repetition in range(args.repeat):
            print("bench: physical (%d of %d) ..." % (repetition + 1, args.repeat), flush=True)
            seconds, sizes = timed(p.full_backup)
            f.add("pgBackRest full", seconds)
            f.facts["pgbackrest_bytes"] = sizes["repo"]
            seconds, timings = timed(p.physical_restore)
            steps = {k: v for k, v in timings.items() if k != "total"}
            steps["ansible and the rest"] = max(0.0, seconds - timings.get("total", 0.0))
            f.add("restore.yml physical", seconds, steps)


def _terminate(signum, _frame):
    raise SystemExit(128 + signum)


def main(argv=None):
    args = parse_args(argv)
    # A plain kill ends the run the way Ctrl-C does: the finally blocks remove what it started.
    signal.signal(signal.SIGTERM, _terminate)
    only = set(filter(None, args.only.split(",")))
    main_paths = not only or bool(only - {"fleet", "scale"})
    f, report, fleet_report, fleet_figures, growth = Figures(), "", "", None, ""
    try:
        if main_paths:
            dataset = rig.ensure_dataset(DB, args.size, args.reseed)
            rig.setup_agent(DB, CONTAINER)
            for repetition in range(args.repeat):
                for name, fn in PATHS:
                    if not only or name in only:
                        print("bench: %s (%d of %d) ..." % (fn.__name__, repetition + 1, args.repeat), flush=True)
                        before, emulator = cpu_times(), azurite_cpu()
                        fn(f)
                        f.cpu.setdefault(f.current, []).append(cores_busy(before, cpu_times()))
                        f.azurite.setdefault(f.current, []).append(azurite_cpu() - emulator)
            if not only or "backup" in only:
                f.facts.update(rig.transfer_rss(DB, CONTAINER))
            if not only or "physical" in only:
                physical(f, args)
            report = render(f, args, dataset)
        if args.scale and (not only or "scale" in only):
            if not main_paths:
                rig.setup_agent(DB, CONTAINER)
            growth = scale(args)
        if args.fleet and (not only or "fleet" in only or "backup" in only):
            fleet_figures, fleet_report = fleet(args)
    finally:
        rig.restore_agent()
    print("\n\n".join(r for r in (report, growth, fleet_report) if r))
    if args.json:
        raw = {"runs": f.runs, "steps": f.steps, "facts": f.facts, "cores_busy": f.cpu, "azurite_cpu": f.azurite}
        if fleet_figures:
            raw["fleet"] = {
                "hosts": args.fleet,
                "runs": fleet_figures.runs,
                "steps": fleet_figures.steps,
                "cores_busy": fleet_figures.cpu,
            }
        with open(args.json, "w") as out:
            json.dump(raw, out, indent=2)
    if not args.no_doc:
        if report:
            rig.write_doc(args.doc, report)
        if growth:
            rig.write_doc(args.doc, growth, rig.SCALE_BEGIN, rig.SCALE_END)
        if fleet_report:
            rig.write_doc(args.doc, fleet_report, rig.FLEET_BEGIN, rig.FLEET_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
