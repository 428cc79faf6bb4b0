"""The statuses a record can have (kept apart from ``harness.tolerance`` so that reading
and rendering records does not import torch).

``adapter_error``: the adapter's own code raised (see ``harness.faults``); neither a pass
nor a caught bug, it fails the run until the adapter is fixed."""

PASS, FAIL, ERROR, UNSUPPORTED = "pass", "fail", "error", "unsupported"
ADAPTER_ERROR = "adapter_error"
