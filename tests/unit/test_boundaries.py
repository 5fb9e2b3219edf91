"""The layers hold: only the PostgreSQL layer imports psycopg2 or starts processes (besides the
notifier reading the journal, the encryption layer running age and the physical-backup layer running
pgBackRest), only the Azure transport
imports the Azure SDK, and modules use the layers instead of the libraries. A file that needs
more belongs in another layer."""

import ast
import glob
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ALLOWED = {
    "psycopg2": {"plugins/module_utils/_pg.py"},
    "subprocess": {
        "plugins/module_utils/_pg.py",
        "plugins/module_utils/_pg_cluster.py",
        "plugins/module_utils/_notify.py",
        "plugins/module_utils/_age.py",
        "plugins/module_utils/_pgbackrest.py",
    },
    # Blob storage, and the Resource Manager API for lifecycle policies.
    "azure": {"plugins/module_utils/_azure.py", "plugins/module_utils/_lifecycle.py"},
}
FILES = sorted(
    os.path.relpath(p, ROOT)
    for p in glob.glob(os.path.join(ROOT, "plugins", "module_utils", "*.py"))
    + glob.glob(os.path.join(ROOT, "plugins", "modules", "*.py"))
)


def imported_roots(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module.split(".")[0], node.lineno


@pytest.mark.parametrize("path", FILES)
def test_libraries_are_imported_only_by_their_layer(path):
    wrong = [
        "%s:%d imports %s" % (path, line, root)
        for root, line in imported_roots(path)
        if root in ALLOWED and path not in ALLOWED[root]
    ]
    assert not wrong, "; ".join(wrong)


def test_the_scan_sees_the_imports_it_checks():
    found = {root for root, _line in imported_roots("plugins/module_utils/_pg.py")}
    assert {"psycopg2", "subprocess"} <= found and len(FILES) > 20
