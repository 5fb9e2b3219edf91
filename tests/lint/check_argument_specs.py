"""Every role keeps meta/argument_specs.yml and defaults/main.yml in step.

For each role under roles/ (entry point ``main``):
- the option names equal the variable names in defaults/main.yml;
- every option has a description and a type, and a default equal to the one in
  defaults/main.yml (or ``required: true`` and no default);
- every option is prefixed with the role name.

Run from the collection root: ``python tests/lint/check_argument_specs.py``.
"""

import pathlib
import sys

import yaml


def check_role(role):
    problems = []
    spec_path = role / "meta" / "argument_specs.yml"
    defaults_path = role / "defaults" / "main.yml"
    if not spec_path.exists():
        return ["%s: no meta/argument_specs.yml" % role.name]
    spec = yaml.safe_load(spec_path.read_text()) or {}
    options = (spec.get("argument_specs", {}).get("main", {}) or {}).get("options") or {}
    defaults = (yaml.safe_load(defaults_path.read_text()) if defaults_path.exists() else None) or {}

    for name in sorted(set(defaults) - set(options)):
        problems.append("%s: %s is in defaults/main.yml but not in argument_specs" % (role.name, name))
    for name, option in sorted(options.items()):
        where = "%s: option %s" % (role.name, name)
        if not name.startswith(role.name + "_"):
            problems.append("%s is not prefixed with %s_" % (where, role.name))
        if not option.get("description"):
            problems.append("%s has no description" % where)
        if not option.get("type"):
            problems.append("%s has no type" % where)
        if option.get("required"):
            if "default" in option or name in defaults:
                problems.append("%s is required but has a default" % where)
            continue
        if name not in defaults:
            problems.append("%s is not in defaults/main.yml" % where)
        elif "default" not in option:
            problems.append("%s has no default (defaults/main.yml: %r)" % (where, defaults[name]))
        elif option["default"] != defaults[name]:
            problems.append(
                "%s: default %r differs from defaults/main.yml %r" % (where, option["default"], defaults[name])
            )
    return problems


def main():
    roles = sorted(p for p in pathlib.Path("roles").iterdir() if p.is_dir()) if pathlib.Path("roles").is_dir() else []
    problems = [p for role in roles for p in check_role(role)]
    for p in problems:
        print(p, file=sys.stderr)
    print("argument_specs: %d role(s), %d problem(s)" % (len(roles), len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
