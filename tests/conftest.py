import os
from pathlib import Path

# Tests compile the same search and update programs many times (and in subprocesses):
# share them through one on-disk cache for the whole run.
os.environ.setdefault("DREAMZERO_COMPILATION_CACHE",
                      str(Path(__file__).resolve().parent.parent / ".pytest_cache" / "xla"))

from agent.cli import enable_compilation_cache  # noqa: E402

enable_compilation_cache()


def pytest_collection_modifyitems(items):
    """The tests in an xdist_group first: they are the longest (the learning runs, the
    killed run and what shares it), and handed out first they even out the workers'
    loads, since the scheduler hands out whole groups and modules in collection order."""
    items.sort(key=lambda item: item.get_closest_marker("xdist_group") is None)
