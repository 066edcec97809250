"""A pytest plugin (-p tests.env), loaded before Django's settings: the test run's own
values for what production must set."""

import os

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-" + "x" * 20)
