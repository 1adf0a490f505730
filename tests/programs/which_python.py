"""A sweep's own program that records which python ran it (data/python.json)."""

import json
import os
import sys

os.makedirs("data", exist_ok=True)
with open(os.path.join("data", "python.json"), "w") as file:
    json.dump(sys.executable, file)
