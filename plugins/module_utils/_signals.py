# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SIGTERM and SIGHUP as an exception, so that cleanup code runs when a run is stopped.

Python's default action for SIGTERM ends the process at once: no ``finally`` runs, and a
restore drill leaves its scratch database in the live cluster, a swap leaves the live database
refusing connections. systemd stops a unit (``systemctl stop``, ``TimeoutStartSec=``) with
SIGTERM and a lost SSH session sends SIGHUP; inside ``terminate_raises()`` either raises
``Terminated`` in the main thread instead. Terminated derives from BaseException, like
KeyboardInterrupt: ``except Exception`` (a failed step, reported, the run goes on) does not
swallow it, every ``finally`` and ``except BaseException`` cleanup runs.

One signal is enough: later ones are noted and ignored, so that the cleanup is not itself
interrupted (systemd sends SIGKILL after TimeoutStopSec= if it takes too long).

Private to the collection. No Ansible imports: the scheduled runner uses this.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(BaseException):
    """The process was asked to stop (SIGTERM, SIGHUP). ``signum`` says which signal."""

    def __init__(self, signum):
        self.signum = signum
        super(Terminated, self).__init__("stopped by %s" % signal.Signals(signum).name)


@contextlib.contextmanager
def terminate_raises(signals=SIGNALS):
    """Within the block, the first of ``signals`` raises Terminated; the ones after it are
    ignored. The previous handlers come back afterwards. Outside the main thread (where Python
    cannot install handlers) the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    state = {"received": None}

    def handler(signum, frame):
        if state["received"] is not None:
            return  # cleanup of the first one is running: let it finish
        state["received"] = signum
        raise Terminated(signum)

    previous = {}
    try:
        for signum in signals:
            previous[signum] = signal.signal(signum, handler)
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def exit_status(exc):
    """The exit status of a process ended by a signal, as a shell reports it (128 + signal)."""
    return 128 + int(exc.signum)
