"""One-line error messages: what the `dreamzero` commands print in place of a traceback."""

from __future__ import annotations

import os
import re


def one_line(error: BaseException) -> str:
    """`Type: first line`, short enough for a one-line message."""
    lines = str(error).strip().splitlines()
    # TensorStore's write errors put the cause (the OS error) last, after long paths.
    os_error = re.search(r"os_error_code='(\d+)'", str(error))
    first = os.strerror(int(os_error[1])) if os_error else (lines[0] if lines else "")
    text = f"{type(error).__name__}: {first}".rstrip(": ")
    return text if len(text) <= 200 else text[:197] + "..."
