"""Login protection and the production configuration's deploy checks (S5, issue 8)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def _login(client, username, password):
    return client.post(
        reverse("admin:login"),
        {"username": username, "password": password, "next": "/admin/"},
        REMOTE_ADDR="203.0.113.7",
    )


def test_repeated_failures_lock_that_username_out_but_not_others(client, settings):
    settings.AXES_FAILURE_LIMIT = 3
    UserFactory(username="ann", password="right-password-1", is_staff=True)
    UserFactory(username="bob", password="right-password-2", is_staff=True)

    failures = [_login(client, "ann", "wrong").status_code for _ in range(3)]
    locked = _login(client, "ann", "right-password-1")
    logged_in_while_locked = "_auth_user_id" in client.session
    other = _login(client, "bob", "right-password-2")

    # The third failure reaches the limit: from then on ann is refused, even with her password.
    assert failures == [200, 200, 429]
    assert locked.status_code == 429
    assert logged_in_while_locked is False
    assert other.status_code == 302


def _deploy_check(**settings) -> subprocess.CompletedProcess:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DEBUG", "HTTPS", "DATABASE_URL", "REDIS_URL"}
    }
    env.update(
        SECRET_KEY="x9" * 30 + "-production-grade-secret-key",
        ALLOWED_HOSTS="coremetrics.example",
        PUBLIC_BASE_URL="https://coremetrics.example",
        DJANGO_SETTINGS_MODULE="coremetrics.settings",
        **settings,
    )
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )


def test_the_production_configuration_passes_the_deploy_checks():
    result = _deploy_check()

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_plain_http_addresses_in_email_fail_the_deploy_checks():
    result = _deploy_check(EMAIL_BASE_URL="http://mail.coremetrics.example")

    assert result.returncode == 1
    assert "(campaigns.W001) EMAIL_BASE_URL is 'http://mail.coremetrics.example'" in result.stderr
