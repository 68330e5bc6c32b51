"""A kill point for the kill -9 test (on PYTHONPATH only there): the process that renames a file
over the path ending in $AZR_TEST_PAUSE_AFTER (e.g. iterations/000001/committed.json) writes
$AZR_TEST_PAUSE_MARK and then sleeps, so the test kills it exactly after that write, at a
point the run would otherwise pass in milliseconds. Every other process runs untouched."""

import os

_suffix = os.environ.get("AZR_TEST_PAUSE_AFTER")
_mark = os.environ.get("AZR_TEST_PAUSE_MARK")

if _suffix and _mark:
    import time

    _replace = os.replace

    def _pausing_replace(src, dst, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        _replace(src, dst, *args, **kwargs)
        if os.fspath(dst).endswith(_suffix) and not os.path.exists(_mark):
            with open(_mark, "w") as handle:
                handle.write(str(os.getpid()))
            while True:
                time.sleep(60)

    os.replace = _pausing_replace
