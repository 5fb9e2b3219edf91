"""_age and _encryption with the real age binary (tests/rig/host-deps.sh installs it): what goes
out is age ciphertext of exactly the plaintext read, only the right identity decrypts, a
decryption that gives other content is not kept, and the identity never reaches argv, disk or a
message."""

import hashlib
import os
import subprocess

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _age, _encryption, _errors, _follow
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf


def keypair():
    identity = subprocess.run(["age-keygen"], capture_output=True, check=True, text=True).stdout
    return identity, _age.identity_recipients(identity)[0]


@pytest.fixture(scope="module")
def alice():
    return keypair()


@pytest.fixture(scope="module")
def bob():
    return keypair()


def digest(data):
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def test_recipients_are_checked_and_deduplicated(alice, bob):
    assert _age.recipients([alice[1], bob[1], alice[1]]) == [alice[1], bob[1]]
    assert _age.recipients([]) == []
    with pytest.raises(_errors.ConfigError, match="never an AGE-SECRET-KEY"):
        _age.recipients([alice[0].splitlines()[-1]])
    with pytest.raises(_errors.ConfigError, match="not an age recipient"):
        _age.recipients(["age1short"])


def test_a_round_trip_gives_the_plaintext_and_both_digests(tmp_path, alice):
    data = os.urandom(3 * _age.CHUNK + 17)
    stored = tmp_path / "x.age"
    plain, enc = _age.encrypt([data[i : i + 65536] for i in range(0, len(data), 65536)], str(stored), [alice[1]])
    raw = stored.read_bytes()
    assert plain == digest(data) and enc == digest(raw)
    assert raw.startswith(_age.MAGIC) and data[:4096] not in raw
    assert oct(os.stat(stored).st_mode & 0o777) == "0o600"
    out = tmp_path / "x"
    assert _age.decrypt(str(stored), str(out), alice[0], digest(data)) == len(data)
    assert out.read_bytes() == data


def test_another_identity_cannot_decrypt_and_nothing_is_left(tmp_path, alice, bob):
    stored = tmp_path / "x.age"
    _age.encrypt([b"telemetry"], str(stored), [alice[1]])
    with pytest.raises(_age.EncryptionError, match="matches none of the recipients") as e:
        _age.decrypt(str(stored), str(tmp_path / "x"), bob[0], digest(b"telemetry"))
    assert bob[0].split()[-1] not in str(e.value)
    assert not (tmp_path / "x").exists()


def test_a_decryption_to_other_content_is_not_kept(tmp_path, alice):
    # Anyone holding the recipient can encrypt other content to it: the manifest's digest decides.
    stored = tmp_path / "x.age"
    _age.encrypt([b"forged rows"], str(stored), [alice[1]])
    with pytest.raises(_age.EncryptionError, match="not kept"):
        _age.decrypt(str(stored), str(tmp_path / "x"), alice[0], digest(b"real rows"))
    assert not (tmp_path / "x").exists()


def test_damaged_ciphertext_is_refused(tmp_path, alice):
    stored = tmp_path / "x.age"
    _age.encrypt([os.urandom(200000)], str(stored), [alice[1]])
    raw = bytearray(stored.read_bytes())
    raw[-100] ^= 1
    stored.write_bytes(bytes(raw))
    with pytest.raises(_age.EncryptionError, match="damaged or not age-encrypted"):
        _age.decrypt(str(stored), str(tmp_path / "x"), alice[0], digest(b""))
    assert not (tmp_path / "x").exists()


def test_the_identity_never_reaches_argv(tmp_path, alice, monkeypatch):
    seen = []
    real = subprocess.Popen

    def recording(argv, *args, **kwargs):
        seen.append(list(argv))
        return real(argv, *args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", recording)
    stored = tmp_path / "x.age"
    _age.encrypt([b"abc"], str(stored), [alice[1]])
    _age.decrypt(str(stored), str(tmp_path / "x"), alice[0], digest(b"abc"))
    secret = alice[0].strip().splitlines()[-1]
    assert seen and not any(secret in " ".join(a) for a in seen)
    assert any(a[-2:] == ["-i", a[-1]] and a[-1].startswith("/dev/fd/") for a in seen)


def test_an_identity_file_that_is_not_one_is_refused_without_quoting_it():
    with pytest.raises(_errors.ConfigError) as e:
        _age.identity_recipients("AGE-SECRET-KEY-1NOTAKEY\n")
    assert "NOTAKEY" not in str(e.value)


def test_the_encryptor_is_fed_as_the_archive_is_written_and_stops_with_it(tmp_path, alice):
    data = os.urandom(5 * _age.CHUNK)
    enc = _age.Encryptor([alice[1]], str(tmp_path / "a.dump.age.partial"))
    upload = _follow.Follower(enc.stored, 1024 * 1024)  # what the upload does: follow the output
    upload.work = lambda blocks: sum(len(b) for b in blocks)
    upload.start()
    for i in range(0, len(data), 300000):
        enc.feed(data[i : i + 300000])
    done = enc.finish(len(data))
    stored = (tmp_path / "a.dump.age.partial").read_bytes()
    assert done["plain"]["size"] == len(data) and done["stored"] == digest(stored)
    upload.join(30)
    assert upload.error is None and upload.read_whole(*digest(stored).values())

    enc = _age.Encryptor([alice[1]], str(tmp_path / "b.dump.age.partial"))
    enc.feed(b"x" * 1000)
    assert enc.finish(2000) is None and "fed 1000 bytes of the 2000" in str(enc.error)

    enc = _age.Encryptor([alice[1]], str(tmp_path / "c.dump.age.partial"))
    enc.feed(b"x" * 1000)
    enc.cancel()  # pg_dump failed
    assert not (tmp_path / "c.dump.age.partial").exists()
    with pytest.raises(_follow.Abandoned):
        list(enc.stored.blocks(1024))


def make_set(tmp_path, archive=b"PGDMP" + b"\0" * 5000, roles=b"CREATE ROLE iot;\n"):
    bset = mf.BackupSet(str(tmp_path), "iot", "20261201T020000Z")
    os.makedirs(bset.folder, mode=0o700)
    with open(bset.archive, "wb") as f:
        f.write(archive)
    with open(bset.globals_sql, "wb") as f:
        f.write(roles)
    manifest = {
        "backup_id": bset.backup_id,
        "database": "iot",
        "archive": {"sha256": digest(archive)["sha256"], "size_bytes": len(archive)},
        "globals": {"sha256": digest(roles)["sha256"], "size_bytes": len(roles)},
    }
    return bset, manifest


def test_a_set_gets_its_stored_form_and_is_opened_again_with_the_identity(tmp_path, alice, bob):
    bset, manifest = make_set(tmp_path)
    archive = open(bset.archive, "rb").read()
    manifest["encryption"] = _encryption.encrypt_set(bset, manifest["archive"], manifest["globals"], [alice[1]])
    enc = manifest["encryption"]
    assert enc["recipients"] == [alice[1]] and enc["archive"]["file"] == "20261201T020000Z.dump.age"
    for part, _plain, stored, _p, want in _encryption.parts(bset, manifest):
        assert digest(open(stored, "rb").read()) == want, part
    # As a download without identity leaves it: the stored form only.
    os.unlink(bset.archive)
    os.unlink(bset.globals_sql)
    assert len(_encryption.missing_plaintext(bset, manifest)) == 2
    with pytest.raises(_errors.ConfigError, match="needs its identity"):
        _encryption.open_set(bset, manifest, None)
    with pytest.raises(_errors.ConfigError, match="give the identity of one of those"):
        _encryption.open_set(bset, manifest, bob[0])
    assert os.path.exists(bset.archive + ".age") and not os.path.exists(bset.archive)
    written = _encryption.open_set(bset, manifest, alice[0])
    assert written == [bset.archive, bset.globals_sql]
    assert open(bset.archive, "rb").read() == archive
    assert not os.path.exists(bset.archive + ".age") and _encryption.open_set(bset, manifest, alice[0]) == []


def test_the_stored_form_goes_with_the_set(tmp_path, alice):
    bset, manifest = make_set(tmp_path)
    manifest["encryption"] = _encryption.encrypt_set(bset, manifest["archive"], manifest["globals"], [alice[1]])
    assert bset.archive + ".age" in bset.all_paths() and bset.globals_sql + ".age" in bset.all_paths()
    assert _encryption.remove_stored(bset, manifest) == [bset.archive + ".age", bset.globals_sql + ".age"]
    assert os.path.exists(bset.archive) and os.path.exists(bset.globals_sql)


def test_a_fed_encryptor_stopped_early_neither_raises_nor_leaves_a_file(tmp_path, alice):
    enc = _age.Encryptor([alice[1]], str(tmp_path / "x.age.partial"))
    enc.cancel()
    enc.feed(b"after the dump failed")  # the copy loop may still hold a block
    assert enc.finish(21) is None and "stopped before its input was complete" in str(enc.error)
    assert not (tmp_path / "x.age.partial").exists()


def signed_manifest(bset, manifest):
    doc = dict(manifest, format=mf.MANIFEST_FORMAT, format_version=mf.MANIFEST_VERSION)
    doc.update(host="db01", dump={"format": "custom"}, tables={})
    return doc


def test_a_set_in_clear_is_encrypted_before_it_leaves_or_left_as_it_was(tmp_path, alice):
    bset, manifest = make_set(tmp_path)
    doc = signed_manifest(bset, manifest)
    mf.write_manifest(bset.manifest, doc)
    new = _encryption.encrypt_existing(bset, mf.read_manifest(bset.manifest), [alice[1]])
    assert new["format_version"] == 2 and new["encryption"]["recipients"] == [alice[1]]
    assert new["archive"] == doc["archive"] and os.path.exists(bset.archive + ".age")

    bset, manifest = make_set(tmp_path / "signed")
    signed = dict(signed_manifest(bset, manifest), signature={"algorithm": "ed25519", "key_id": "x", "value": "y"})
    with pytest.raises(_encryption.NotEncryptable, match="no signing key to sign it again"):
        _encryption.encrypt_existing(bset, signed, [alice[1]])
    bset, manifest = make_set(tmp_path / "broken")
    with pytest.raises(_encryption.NotEncryptable, match="encrypting it failed") as e:
        _encryption.encrypt_existing(bset, signed_manifest(bset, manifest), ["age1" + "q" * 58])  # age refuses it
    assert e.value.kind != "error"
    assert not [n for n in os.listdir(bset.folder) if ".age" in n]


def test_a_manifest_with_a_malformed_encryption_section_is_refused(alice):
    good = {"sha256": "a" * 64, "size_bytes": 10}
    for enc in (
        {"format": "gpg", "recipients": [alice[1]], "archive": good},
        {"format": "age", "recipients": ["AGE-SECRET-KEY-1X"], "archive": good},
        {"format": "age", "recipients": [alice[1]], "archive": {"sha256": "nope", "size_bytes": 10}},
        {"format": "age", "recipients": [alice[1]]},
    ):
        doc = {
            "format": mf.MANIFEST_FORMAT,
            "format_version": mf.MANIFEST_VERSION_ENCRYPTED,
            "backup_id": "20261201T020000Z",
            "database": "iot",
            "archive": good,
            "tables": {},
            "dump": {"format": "custom"},
            "encryption": enc,
        }
        with pytest.raises(mf.ManifestError, match="encryption section"):
            mf.parse_manifest(mf.dumps(doc))
