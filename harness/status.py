"""The statuses a record can have (kept apart from ``harness.tolerance`` so that reading
and rendering records does not import torch)."""

PASS, FAIL, ERROR, UNSUPPORTED = "pass", "fail", "error", "unsupported"
