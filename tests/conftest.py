import os
from pathlib import Path

# Tests compile the same search and update programs many times (and in subprocesses):
# share them through one on-disk cache for the whole run.
os.environ.setdefault("DREAMZERO_COMPILATION_CACHE",
                      str(Path(__file__).resolve().parent.parent / ".pytest_cache" / "xla"))

from agent.cli import enable_compilation_cache  # noqa: E402

enable_compilation_cache()
