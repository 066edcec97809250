"""A pytest plugin (-p tests.env), loaded before Django's settings: the test run's own
values for what production must set."""

import os

# The test servers speak plain HTTP on loopback.
os.environ.setdefault("HTTPS", "0")
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-" + "x" * 20)
