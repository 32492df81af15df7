"""Shared test set-up: tests never read this machine's tuned launch defaults (`hvdkit tune`
writes ~/.config/hvdkit/defaults.yaml), so they run the same on every host; a test that checks
those defaults turns them back on for its own job."""

from __future__ import annotations

import os

os.environ["HVDKIT_NO_MACHINE_DEFAULTS"] = "1"
