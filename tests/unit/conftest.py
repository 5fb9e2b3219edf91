import os
import sys

# The checkout is the collection; collections/ holds the ansible_collections/insa/timescaledb_backup link.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "collections"))
