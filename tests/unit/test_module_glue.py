"""The glue the modules share: options to keyword arguments, the checks and messages every module
gives the same way."""

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _module_glue


class Failed(Exception):
    pass


class Module:
    """What the glue uses of an AnsibleModule."""

    def __init__(self, **params):
        self.params = params
        self.warnings = []

    def fail_json(self, **kwargs):
        raise Failed(kwargs)

    def warn(self, warning):
        self.warnings.append(warning)


def test_options_pass_under_their_own_name_or_renamed():
    params = {"jobs": 2, "host_label": "db01", "force": False}
    assert _module_glue.options(params, "jobs", "force", host="host_label") == {
        "jobs": 2,
        "force": False,
        "host": "db01",
    }


def test_check_minimum_says_which_option_and_the_bound():
    _module_glue.check_minimum(Module(jobs=1), "jobs", 1)
    with pytest.raises(Failed) as e:
        _module_glue.check_minimum(Module(grace_minutes=-1), "grace_minutes", 0)
    assert e.value.args[0] == {"msg": "grace_minutes must be 0 or more"}


def test_failures_fail_with_the_first_ones_and_the_whole_result():
    result = {"failures": [{"id": n} for n in range(3)], "bytes": 0}
    _module_glue.fail_on_failures(Module(), {"failures": []}, "set(s) not sent", str)
    with pytest.raises(Failed) as e:
        _module_glue.fail_on_failures(Module(), result, "set(s) not sent", lambda f: "#%d" % f["id"], most=2)
    assert e.value.args[0] == dict(result, msg="3 set(s) not sent: #0; #1")


def test_warnings_and_missing_libraries():
    module = Module()
    _module_glue.warn(module, ["one", "two"])
    assert module.warnings == ["one", "two"]
    _module_glue.require_lib(module, True, "pyarrow", None)
    with pytest.raises(Failed) as e:
        _module_glue.require_lib(module, False, "pyarrow", "Traceback ...", reason="to read Parquet")
    assert "pyarrow" in e.value.args[0]["msg"] and e.value.args[0]["exception"] == "Traceback ..."
