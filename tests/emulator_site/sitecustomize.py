"""Anonymous Beam credentials in every Python process a GCS-emulator test starts.

:func:`gcs_emulator.running_emulator` puts this folder on ``PYTHONPATH`` while the emulator
runs, so child processes (the decode helper, Beam's worker processes) import this at start-up.
Without it each one spends ~25 s looking for real Google credentials before its first gs://
read; the emulator takes anonymous requests.
"""

import os

if os.environ.get("STORAGE_EMULATOR_HOST"):
    import importlib.util

    _path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gcs_emulator.py")
    _spec = importlib.util.spec_from_file_location("_gcs_emulator", _path)
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
    _module.anonymous_beam_gcs()
