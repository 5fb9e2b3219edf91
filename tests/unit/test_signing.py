"""Signed manifests (_signing): keys, signatures, the trust store and the policy, and the places
that refuse what it refuses - the catalog and download of backup sets (an in-memory container
behind the real Catalog and Transfers code), prune's proof of a remote copy, restore's and
verify's local check, history manifests and retention. No service, no network."""

import datetime
import hashlib
import json
import os
import stat
import types

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (
    _azure_catalog,
    _azure_transfers,
    _errors,
    _prune,
    _restore,
    _runner,
    _verify,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history as h
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_manifest as hm
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_restore as hres
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_retention as hr
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _signing as sg
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._azure_names import blob_name

pytestmark = pytest.mark.skipif(not sg.HAS_CRYPTOGRAPHY, reason="cryptography is not installed")

BID, OLDER = "20261127T020000Z", "20261126T020000Z"
LABEL = "20260105T000000Z_20260106T000000Z"


def new_key(tmp_path, name="key.pem", mode=0o640):
    key, created = sg.create_key_file(str(tmp_path / name), mode=mode)
    assert created
    return key


def sample(backup_id=BID, database="iot", host="db01"):
    return {
        "format": mf.MANIFEST_FORMAT,
        "format_version": mf.MANIFEST_VERSION,
        "backup_id": backup_id,
        "database": database,
        "host": host,
        "archive": {"file": backup_id + ".dump", "size_bytes": 7, "sha256": hashlib.sha256(b"archive").hexdigest()},
        "tables": {"public.devices": {"rows": 10}},
        "dump": {"format": "custom"},
    }


def signed(document, key):
    """What a signing host writes: signed, then sealed, read back as parse_manifest reads it."""
    return mf.parse_manifest(mf.dumps(document, sg.Policy(signer=key)))


# ---------------------------------------------------------------------------------------------
# Keys and signatures


def test_round_trip_and_the_public_key_format(tmp_path):
    key = new_key(tmp_path)
    assert key.public_text.startswith("ed25519:") and sg.parse_public_key(key.public_text) == key.public_raw
    assert key.key_id == hashlib.sha256(key.public_raw).hexdigest()[:16]
    manifest = signed(sample(), key)
    assert manifest["signature"]["algorithm"] == "ed25519" and manifest["signature"]["key_id"] == key.key_id
    trust = sg.load_trust(mapping={"db01": [key.public_text]})
    assert sg.check_signature(manifest, trust, "db01") == {
        "status": "trusted",
        "key_id": key.key_id,
        "signer_host": "db01",
    }
    # The seal covers the signature: a damaged signature is damage, caught before any key is asked.
    text = mf.dumps(manifest, sg.Policy(signer=key)).decode()
    broken = json.loads(text)
    value = broken["signature"]["value"]
    broken["signature"]["value"] = ("B" if value[0] == "A" else "A") + value[1:]  # always another value
    with pytest.raises(mf.ManifestError, match="altered"):
        mf.parse_manifest(json.dumps(broken))


def test_an_edited_and_resealed_manifest_is_a_bad_signature_refused_as_integrity(tmp_path):
    key = new_key(tmp_path)
    forged = dict(signed(sample(), key))
    forged["tables"] = {"public.devices": {"rows": 0}}
    forged = mf.parse_manifest(mf.dumps(forged))  # re-sealed: the sha256 seal alone would accept it
    policy = sg.Policy(trust=sg.load_trust(mapping={"db01": [key.public_text]}))
    assert sg.check_signature(forged, policy.trust, "db01")["status"] == "bad-signature"
    with pytest.raises(sg.SignatureError, match="does not verify") as e:
        policy.check(forged, "db01", "backup x")
    assert e.value.kind == "integrity" and isinstance(e.value, _errors.OperatorError)
    # Even a caller that accepts unsigned sets never accepts a bad signature.
    with pytest.raises(sg.SignatureError):
        sg.Policy(trust=policy.trust, allow_unsigned=True).check(forged, "db01", "backup x", allow_unsigned=True)


def test_a_key_of_another_host_is_other_host_and_an_unlisted_one_unknown(tmp_path):
    a, b, stranger = new_key(tmp_path, "a.pem"), new_key(tmp_path, "b.pem"), new_key(tmp_path, "c.pem")
    trust = sg.load_trust(mapping={"db01": [a.public_text], "db02": [b.public_text]})
    policy = sg.Policy(trust=trust)
    # Signed by db01's key, found under db02's prefix (and claiming db02).
    planted = signed(sample(host="db02"), a)
    assert sg.check_signature(planted, trust, "db02") == {
        "status": "other-host",
        "key_id": a.key_id,
        "signer_host": "db01",
    }
    with pytest.raises(sg.SignatureError, match="under host db02 but is signed by key %s.*trusted for db01" % a.key_id):
        policy.check(planted, "db02", "backup x")
    # Found under db01's prefix but claiming db02: the key must be trusted for both.
    assert sg.check_signature(signed(sample(host="db02"), a), trust, "db01")["status"] == "other-host"
    unknown = signed(sample(), stranger)
    assert sg.check_signature(unknown, trust, "db01")["status"] == "unknown-key"
    with pytest.raises(sg.SignatureError, match="key %s, which the trust store does not list" % stranger.key_id):
        policy.check(unknown, "db01", "backup x")


def test_unsigned_sets_with_and_without_the_policy():
    unsigned = mf.parse_manifest(mf.dumps(sample()))
    trust = {"db01": []}
    with pytest.raises(sg.SignatureError, match="is unsigned: it was made before manifest signing.*allow_unsigned"):
        sg.Policy(trust=trust).check(unsigned, "db01", "backup 1 of iot")
    assert sg.Policy(trust=trust, allow_unsigned=True).check(unsigned, "db01", "b")["status"] == "unsigned"
    assert sg.Policy(trust=trust, require=False).check(unsigned, "db01", "b")["status"] == "unsigned"
    # No trust store: today's behaviour, and it says so.
    assert sg.UNCONFIGURED.check(unsigned, "db01", "b")["status"] == sg.NO_TRUST_STORE == "unsigned, no trust store"
    assert sg.describe(sg.UNCONFIGURED.status(unsigned, "db01")) == "unsigned, no trust store"


def test_key_files_must_be_private(tmp_path):
    key = new_key(tmp_path)
    assert stat.S_IMODE(os.stat(key.path).st_mode) == 0o640
    assert sg.load_signing_key(key.path).key_id == key.key_id
    # Created once: a second run keeps the key (sets signed with it keep their signer).
    again, created = sg.create_key_file(key.path)
    assert not created and again.key_id == key.key_id
    for mode in (0o644, 0o660, 0o604, 0o700):
        os.chmod(key.path, mode)
        with pytest.raises(sg.SigningConfigError, match="mode %04o.*chmod 0640" % mode) as e:
            sg.load_signing_key(key.path)
        assert e.value.kind == "config" and "PRIVATE" not in str(e.value)
    os.chmod(key.path, 0o600)
    sg.load_signing_key(key.path)
    with pytest.raises(sg.SigningConfigError, match="cannot read signing key"):
        sg.load_signing_key(str(tmp_path / "missing.pem"))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    os.chmod(str(garbage), 0o600)
    with pytest.raises(sg.SigningConfigError, match="not an unencrypted PEM private key"):
        sg.load_signing_key(str(garbage))


def test_the_trust_store_file_and_dict(tmp_path):
    a, b = new_key(tmp_path, "a.pem"), new_key(tmp_path, "b.pem")
    path = tmp_path / "trusted-signers.json"
    path.write_text(json.dumps({"_comment": "Ansible managed", "db01": [a.public_text]}))
    trust = sg.load_trust(str(path), {"db01": [b.public_text], "dead": b.public_text})
    assert trust == {"db01": [a.public_raw, b.public_raw], "dead": [b.public_raw]}
    assert sg.load_trust() is None and sg.Policy(trust=None).require is False and sg.Policy(trust={}).require
    for bad, match in (({"db01": ["rsa:AAAA"]}, "not a public key"), ({"db01": ["ed25519:AAAA"]}, "32 bytes")):
        with pytest.raises(sg.SigningConfigError, match=match):
            sg.load_trust(mapping=bad)
    path.write_text("{")
    with pytest.raises(sg.SigningConfigError, match="not valid JSON"):
        sg.load_trust(str(path))
    with pytest.raises(sg.SigningConfigError, match="cannot read the trusted signers file"):
        sg.load_trust(str(tmp_path / "none.json"))


def test_rotation_old_keys_stay_trusted(tmp_path):
    old, new = new_key(tmp_path, "old.pem"), new_key(tmp_path, "new.pem")
    trust = sg.load_trust(mapping={"db01": [new.public_text, old.public_text]})
    assert sg.check_signature(signed(sample(), old), trust, "db01")["status"] == "trusted"
    assert sg.check_signature(signed(sample(), new), trust, "db01")["status"] == "trusted"


# ---------------------------------------------------------------------------------------------
# Backup sets in a container: catalog, download, prune's proof


class SetStore(_azure_catalog.Catalog, _azure_transfers.Transfers):
    """The real catalog and transfer code over an in-memory container; records every download."""

    def __init__(self, signing=sg.UNCONFIGURED, prefix="tsdb"):
        self.prefix, self.container, self.signing, self.progress = prefix, "c", signing, None
        self.blobs = {}
        self.downloads = []

    def redact(self, e):
        return "%s" % e

    def url(self, name):
        return "https://acct/c/" + name

    def put_set(self, host, manifest_bytes, archive=b"archive"):
        manifest = json.loads(manifest_bytes)
        for suffix, data in ((mf.ARCHIVE_SUFFIX, archive), (mf.MANIFEST_SUFFIX, manifest_bytes)):
            name = blob_name(self.prefix, host, manifest["database"], manifest["backup_id"], suffix)
            self.blobs[name] = data

    def _listing(self, start):
        return {
            n: {
                "name": n,
                "url": self.url(n),
                "size": len(d),
                "tier": "Hot",
                "sha256": hashlib.sha256(d).hexdigest(),
                "metadata": {},
            }
            for n, d in sorted(self.blobs.items())
            if n.startswith(start)
        }

    def ensure_container(self, create=None, check_mode=False):
        return {"exists": True, "created": False}

    def read_blob(self, name):
        return self.blobs[name]

    def download_file(self, name, path, sha256):
        self.downloads.append(name)
        with open(path, "wb") as f:
            f.write(self.blobs[name])


@pytest.fixture
def fleet(tmp_path):
    a, b = new_key(tmp_path, "db01.pem"), new_key(tmp_path, "db02.pem")
    trust = sg.load_trust(mapping={"db01": [a.public_text], "db02": [b.public_text]})
    return a, b, trust


def test_a_forged_newer_set_under_another_hosts_prefix_is_refused_before_any_archive_byte(tmp_path, fleet):
    a, b, trust = fleet
    store = SetStore(sg.Policy(trust=trust))
    store.put_set("db02", mf.dumps(sample(OLDER, host="db02"), sg.Policy(signer=b)))
    # db01 (or a leaked SAS with db01's key) plants a newer 'latest' under db02.
    store.put_set("db02", mf.dumps(sample(BID, host="db02"), sg.Policy(signer=a)), archive=b"evil")
    with pytest.raises(sg.SignatureError, match="backup %s of iot under host db02.*trusted for db01" % BID):
        store.download_backup(str(tmp_path / "dl"), "iot", host="db02")
    assert store.downloads == [] and not os.path.exists(str(tmp_path / "dl" / "iot" / (BID + ".dump")))
    # The genuine set downloads, and says it is trusted.
    got = store.download_backup(str(tmp_path / "dl"), "iot", host="db02", backup_id=OLDER)
    assert got["signature"]["status"] == "trusted" and got["changed"]
    # The catalog reads the forged manifest as refused, never as a usable set.
    entries = store.with_manifests(store.list_remote("db02", "iot"))
    forged = [e for e in entries if e["backup_id"] == BID][0]
    assert forged["manifest"] is None and forged["signature"]["status"] == "other-host"
    assert "trusted for db01" in forged["manifest_error"]


def test_an_edited_and_resealed_remote_manifest_is_refused(tmp_path, fleet):
    a, _b, trust = fleet
    store = SetStore(sg.Policy(trust=trust))
    edited = json.loads(mf.dumps(sample(), sg.Policy(signer=a)))
    edited["archive"]["sha256"] = hashlib.sha256(b"evil").hexdigest()
    store.put_set("db01", mf.dumps(edited), archive=b"evil")  # re-sealed, signature kept
    with pytest.raises(sg.SignatureError, match="does not verify"):
        store.download_backup(str(tmp_path / "dl"), "iot", host="db01")
    assert store.downloads == []


def test_unsigned_remote_sets_need_allow_unsigned(tmp_path, fleet):
    _a, _b, trust = fleet
    store = SetStore(sg.Policy(trust=trust))
    store.put_set("db01", mf.dumps(sample()))
    with pytest.raises(sg.SignatureError, match="unsigned"):
        store.download_backup(str(tmp_path / "dl"), "iot", host="db01")
    store.signing = sg.Policy(trust=trust, allow_unsigned=True)
    assert store.download_backup(str(tmp_path / "dl"), "iot", host="db01")["signature"]["status"] == "unsigned"


def write_local(backup_dir, manifest_bytes):
    manifest = json.loads(manifest_bytes)
    folder = os.path.join(backup_dir, manifest["database"])
    os.makedirs(folder, exist_ok=True)
    mf.atomic_write_bytes(os.path.join(folder, manifest["backup_id"] + mf.MANIFEST_SUFFIX), manifest_bytes)


def test_prune_counts_a_remote_copy_only_when_it_is_the_local_set(tmp_path, fleet):
    a, b, trust = fleet
    backup_dir = str(tmp_path / "backups")
    store = SetStore(sg.Policy(trust=trust))
    mine, older = mf.dumps(sample(BID), sg.Policy(signer=a)), mf.dumps(sample(OLDER))
    write_local(backup_dir, mine)
    write_local(backup_dir, older)  # made before signing: unsigned, and so is its copy
    assert store.uploaded_copies(backup_dir, "db01", "iot") == set()  # a listing without copies proves nothing
    store.put_set("db01", older)
    # A forged copy of the newer set (another manifest under the same name) proves nothing either.
    forged = dict(sample(BID), tables={})
    store.put_set("db01", mf.dumps(forged, sg.Policy(signer=b)))
    assert store.uploaded_copies(backup_dir, "db01", "iot") == {OLDER}
    store.put_set("db01", mine)
    assert store.uploaded_copies(backup_dir, "db01", "iot") == {BID, OLDER}
    # The same proof without a store: the seal must be the local one's.
    local = mf.list_local(backup_dir, "iot")
    remote = store.list_remote("db01", "iot")
    assert _prune.proven_uploads(local, remote, lambda e: None) == set()


# ---------------------------------------------------------------------------------------------
# Local sets: restore and verify


def test_restore_and_verify_check_the_local_manifest_again(tmp_path, fleet):
    a, b, trust = fleet
    backup_dir = str(tmp_path / "backups")
    write_local(backup_dir, mf.dumps(sample(host="db01"), sg.Policy(signer=b)))
    policy = sg.Policy(trust=trust)
    with pytest.raises(sg.SignatureError, match="trusted for db02"):
        _restore.backup_set_for(backup_dir, "iot", BID, policy)
    checks = _verify.Checks()
    _verify.verify_checksum(backup_dir, "iot", BID, checks, policy)
    failed = [c for c in checks.items if c["check"] == "signature"]
    assert failed and not failed[0]["ok"] and checks.signature["status"] == "other-host"
    write_local(backup_dir, mf.dumps(sample(OLDER, host="db01"), sg.Policy(signer=a)))
    assert _restore.backup_set_for(backup_dir, "iot", OLDER, policy)[1]["backup_id"] == OLDER
    checks = _verify.Checks()
    _verify.verify_checksum(backup_dir, "iot", OLDER, checks)
    assert [c["message"] for c in checks.items if c["check"] == "signature"] == [
        "signed, no trust store (key %s)" % a.key_id
    ]


# ---------------------------------------------------------------------------------------------
# History manifests and retention


def history_manifest(host="db01"):
    return {
        "format": hm.HISTORY_FORMAT,
        "format_version": hm.HISTORY_VERSION,
        "host": host,
        "database": "iot",
        "hypertable": "public.esp_telemetry",
        "range": {"start": "2026-01-05T00:00:00Z", "end": "2026-01-06T00:00:00Z", "label": LABEL},
        "version": 1,
        "generation": 1,
        "columns": [],
        "rows": 3,
        "content_hash": "42",
        "object": {"name": "%s.v1.parquet" % LABEL, "sha256": hashlib.sha256(b"rows").hexdigest(), "size_bytes": 4},
        "covers": {"rows": 3, "content_hash": "42", "chunks": []},
        "depends_on": [],
    }


class HistoryStore:
    """What history manifests and retention ask of a store."""

    def __init__(self, signing):
        self.signing = signing
        self.blobs = {}
        self.container_client = self
        self.prefix = "tsdb"

    def url(self, name):
        return "https://acct/c/" + name

    def redact(self, e):
        return "%s" % e

    def read_blob(self, name):
        return self.blobs[name][0]

    def list_blobs(self, name_starts_with=None, include=None):
        return [
            types.SimpleNamespace(name=n, size=len(d), metadata=m)
            for n, (d, m) in sorted(self.blobs.items())
            if n.startswith(name_starts_with or "")
        ]

    def properties(self, name):
        data = self.blobs.get(name)
        return None if data is None else {"sha256": hashlib.sha256(data[0]).hexdigest(), "size": len(data[0])}


def put_history(store, place, body):
    month = "%s/2026/01" % place.folder
    store.blobs["%s/%s.v1.parquet" % (month, LABEL)] = (b"rows", {"kind": "data"})
    store.blobs["%s/%s.v1.manifest.json" % (month, LABEL)] = (body, {"kind": "manifest"})


def slice_of():
    utc = datetime.timezone.utc
    return {
        "label": LABEL,
        "start": datetime.datetime(2026, 1, 5, tzinfo=utc),
        "end": datetime.datetime(2026, 1, 6, tzinfo=utc),
        "chunks": [],
    }


@pytest.mark.parametrize("forgery", ["other-host", "unsigned", "resealed"])
def test_a_forged_history_manifest_never_allows_a_drop(tmp_path, fleet, forgery):
    a, b, trust = fleet
    place = h.Place.of("tsdb", "db01", "iot", "public.esp_telemetry")
    store = HistoryStore(sg.Policy(trust=trust))
    if forgery == "other-host":
        body = hm.encode_manifest(history_manifest(), sg.Policy(signer=b))
    elif forgery == "unsigned":
        body = hm.encode_manifest(history_manifest())
    else:
        edited = json.loads(hm.encode_manifest(history_manifest(), sg.Policy(signer=a)))
        edited["covers"]["rows"] = 999
        body = hm.encode_manifest(edited)
    put_history(store, place, body)
    checked, held = hr._check_archive(store, place, slice_of(), False, None)
    assert checked is None and held[0] == hr.HELD_REFUSED
    assert {"other-host": "trusted for db02", "unsigned": "unsigned", "resealed": "does not verify"}[forgery] in held[1]
    # The genuine manifest lets retention go on to its live check.
    put_history(store, place, hm.encode_manifest(history_manifest(), sg.Policy(signer=a)))
    checked, held = hr._check_archive(store, place, slice_of(), False, None)
    assert held is None and checked[0]["signature"]["key_id"] == a.key_id


# ---------------------------------------------------------------------------------------------
# The runner's settings


def test_the_runner_reads_the_signing_settings_and_refuses_a_bad_key_at_start(tmp_path, capsys):
    key = new_key(tmp_path)
    trust = tmp_path / "trusted-signers.json"
    trust.write_text(json.dumps({"db01": [key.public_text]}))
    env = {
        "TSDB_BACKUP_DATABASES": '["iot"]',
        "TSDB_BACKUP_SIGNING_KEY_FILE": key.path,
        "TSDB_BACKUP_TRUSTED_SIGNERS_FILE": str(trust),
    }
    config = _runner.load_config(env)
    assert config["signing"] == {
        "signing_key_file": key.path,
        "trusted_signers_file": str(trust),
        "require_signatures": None,
    }
    policy = _runner.signing_policy(config)
    assert policy.signer.key_id == key.key_id and policy.require and policy.trust == {"db01": [key.public_raw]}
    assert (
        _runner.load_config(dict(env, TSDB_BACKUP_REQUIRE_SIGNATURES="false"))["signing"]["require_signatures"] is False
    )
    # Without the settings: no key, no trust store (nothing signed or checked, as before).
    bare = _runner.signing_policy(_runner.load_config({"TSDB_BACKUP_DATABASES": '["iot"]'}))
    assert bare.signer is None and not bare.configured
    os.chmod(key.path, 0o644)
    state = tmp_path / "state"
    state.mkdir()
    code = _runner.main(["run"], environ=dict(env, TSDB_BACKUP_STATE_DIR=str(state)))
    assert code == _errors.EXIT_CONFIG and "chmod 0640" in capsys.readouterr().err


def test_history_restore_needs_trust_only_for_the_versions_it_loads(fleet):
    a, b, trust = fleet
    place = h.Place.of("tsdb", "db01", "iot", "public.esp_telemetry")
    store = HistoryStore(sg.Policy(trust=trust))
    put_history(store, place, hm.encode_manifest(history_manifest()))  # v1, archived before signing
    month = "%s/2026/01" % place.folder
    signed_again = dict(history_manifest(), version=2)
    store.blobs["%s/%s.v2.manifest.json" % (month, LABEL)] = (hm.encode_manifest(signed_again, sg.Policy(signer=a)), {})
    start, end = slice_of()["start"], slice_of()["end"]
    ((label, _entry, chosen),) = hres._select_ranges(store, place, start, end, None)
    assert label == LABEL and [m["version"] for m in chosen] == [2]
    # Asked for the unsigned version itself: refused unless allowed.
    with pytest.raises(hm.UntrustedManifest, match="unsigned"):
        hres._select_ranges(store, place, start, end, 1)
    store.signing = sg.Policy(trust=trust, allow_unsigned=True)
    assert [m["version"] for m in hres._select_ranges(store, place, start, end, 1)[0][2]] == [1]
    # A forged newer version signed with another host's key stops the restore.
    forged = dict(history_manifest(), version=3)
    store.blobs["%s/%s.v3.manifest.json" % (month, LABEL)] = (hm.encode_manifest(forged, sg.Policy(signer=b)), {})
    with pytest.raises(hm.UntrustedManifest, match="trusted for db02"):
        hres._select_ranges(store, place, start, end, None)
