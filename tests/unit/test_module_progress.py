"""Modules report long transfers to the target's journal through module.log."""

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _module_glue


class Module:
    """What progress_factory uses of an AnsibleModule: its name and its log()."""

    _name = "restore"

    def __init__(self):
        self.logged = []

    def log(self, msg):
        self.logged.append(msg)


def test_progress_lines_go_to_module_log():
    module = Module()
    factory = _module_glue.progress_factory(module, interval_seconds=0)
    progress = factory("restore iot__restore_20261127T020000Z", 4 * 1024 * 1024)
    progress(1024 * 1024)
    progress.finish(4 * 1024 * 1024)
    assert len(module.logged) == 2, module.logged
    assert module.logged[0].startswith("restore iot__restore_20261127T020000Z: 1.0 MiB done of 4.0 MiB (25%)")
    assert module.logged[1].startswith("restore iot__restore_20261127T020000Z: finished, 4.0 MiB in ")


def test_a_second_module_in_the_same_process_does_not_double_lines():
    first, second = Module(), Module()
    _module_glue.progress_factory(first, interval_seconds=0)("upload x", None).finish(1)
    _module_glue.progress_factory(second, interval_seconds=0)("upload y", None).finish(1)
    assert len(second.logged) == 1 and second.logged[0].startswith("upload y: finished")
