"""Test-session settings: no test ever downloads data over the network (tests that exercise the download fake it)."""

import os

os.environ["DIFFEOSENS_DOWNLOAD"] = "0"
