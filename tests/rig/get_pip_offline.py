"""Stand-in for the get-pip bootstrap script that ansible-test downloads.

ansible-test bootstraps pip into each virtual environment it creates with a script from
ci-files.testing.ansible.com (and bootstrap.pypa.io is no better): neither host is reachable
from our machines, PyPI is. tests/sanity.sh installs this file as
``~/.ansible/test/cache/get_pip_<version>.py``, where ansible-test looks before downloading.

ansible-test runs it inside an empty virtual environment as::

    python get_pip_24_2.py --disable-pip-version-check pip==24.2 --no-setuptools --no-wheel

Like get-pip.py it leaves that pip installed: first the interpreter's bundled pip (ensurepip,
no network), which then installs the requested packages (``pip==24.2``) from PyPI.
"""

import subprocess
import sys

# Options of get-pip.py itself, not of `pip install`.
GET_PIP_ONLY = ("--no-setuptools", "--no-wheel")


def main():
    args = [a for a in sys.argv[1:] if a not in GET_PIP_ONLY]
    # In a child process: ensurepip sets PIP_CONFIG_FILE=/dev/null in its own environment,
    # and the second pip needs the machine's pip configuration (index, CA certificates).
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--upgrade", *args])


if __name__ == "__main__":
    main()
