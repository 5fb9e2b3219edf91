"""Every systemd unit of the collection gets the same sandbox (issue: no unit weaker than the
backup one): one list in roles/backup_agent/vars/main.yml, included by every unit template.
The rig runs the units with it (tests/integration/runner, the Molecule scenarios)."""

import glob
import os

import yaml

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
UNITS = sorted(glob.glob(os.path.join(ROOT, "roles", "*", "templates", "*.service.j2")))
# What the sandbox must contain, at least (systemd.exec(5)).
REQUIRED = {
    "ProtectSystem": "strict",
    "NoNewPrivileges": "true",
    "CapabilityBoundingSet": "",
    "ProtectProc": "invisible",
    "ProtectKernelTunables": "true",
    "ProtectKernelModules": "true",
    "ProtectKernelLogs": "true",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "SystemCallFilter": "@system-service",
    "PrivateTmp": "true",
}


def hardening():
    with open(os.path.join(ROOT, "roles", "backup_agent", "vars", "main.yml")) as f:
        text = yaml.safe_load(f)["__backup_agent_unit_hardening"]
    return dict(line.split("=", 1) for line in text.splitlines())


def test_the_sandbox_has_every_required_setting():
    found = hardening()
    assert {k: found.get(k) for k in REQUIRED} == REQUIRED


def test_every_unit_template_uses_the_one_sandbox_and_sets_none_of_its_own():
    assert len(UNITS) >= 4
    names = set(hardening())
    for path in UNITS:
        with open(path) as f:
            lines = f.read().splitlines()
        assert "{{ __backup_agent_unit_hardening }}" in lines, path
        own = {line.split("=", 1)[0] for line in lines if "=" in line and not line.startswith("#")}
        assert not own & names, "%s sets %s itself" % (path, sorted(own & names))
