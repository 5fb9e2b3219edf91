"""The point-in-time suite runs on containers and an Azurite of its own (HTTPS, which pgBackRest
needs): the rig's shared host is never touched."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "azure"))
# The runbook's steps (test_runbook.step_of): the physical blocks of docs/RESTORE.md run here.
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "playbooks"))
