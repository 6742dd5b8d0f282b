"""Fixtures shared by every test folder."""

from tests.convert.conftest import gcs_in_memory  # noqa: F401  (a gs:// store in memory)
