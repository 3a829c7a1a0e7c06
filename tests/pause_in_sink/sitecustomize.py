"""Test-only: pause every process of a run inside its Parquet writer (this folder on PYTHONPATH).

Python imports ``sitecustomize`` at start-up in each process, so the pause reaches whatever
process ends up writing (in-process DirectRunner threads or multi-process workers). After
pyarrow has written the first row group of a file under a ``tags/`` folder, the writing
thread records ``in sink, writing PATH`` in the file ``$TAGSCALE_TEST_PAUSE_MARKER`` and
sleeps, so a test can kill the run while it is inside the write, with the file half made.
"""

import os
import time

import pyarrow.parquet as pq

_MARKER = os.environ.get("TAGSCALE_TEST_PAUSE_MARKER")
_init, _write_table = pq.ParquetWriter.__init__, pq.ParquetWriter.write_table


def _init_remembering_path(self, where, *args, **kwargs):
    self._test_path = str(getattr(where, "name", where))
    _init(self, where, *args, **kwargs)


def _write_table_then_pause(self, table, *args, **kwargs):
    _write_table(self, table, *args, **kwargs)
    path = getattr(self, "_test_path", "")
    if _MARKER and "/tags/" in path:
        with open(_MARKER, "w", encoding="utf-8") as handle:
            handle.write(f"in sink, writing {path}\n")
        time.sleep(3600)


pq.ParquetWriter.__init__ = _init_remembering_path
pq.ParquetWriter.write_table = _write_table_then_pause
