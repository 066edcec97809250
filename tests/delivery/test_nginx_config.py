"""`manage.py nginx_config`: the nginx configuration of several delivery nodes (D6); the
routing itself is tested with real nodes in tests/e2e/test_nodes.py."""

import subprocess
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tests.factories import ClientFactory

NGINX = "/usr/sbin/nginx"


def _render(*args: str) -> str:
    out = StringIO()
    call_command("nginx_config", *args, stdout=out)
    return out.getvalue()


def _nginx_test(prefix, conf: str) -> subprocess.CompletedProcess:
    (prefix / "nginx.conf").write_text(conf)
    return subprocess.run(
        [
            *(NGINX, "-t", "-p", str(prefix), "-c", str(prefix / "nginx.conf")),
            *("-e", str(prefix / "error.log")),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.django_db
def test_heavy_clients_are_listed_by_key_and_no_one_else():
    heavy = [ClientFactory(is_heavy=True), ClientFactory(is_heavy=True)]
    ClientFactory()

    conf = _render("--node=10.0.0.11:8000")

    block = conf.split("map $arg_k $coremetrics_heavy {\n")[1].split("}")[0]
    keys = sorted(client.public_key for client in heavy)
    assert block == "    default 0;" + "".join(f'\n    "{key}" 1;' for key in keys) + "\n"


@pytest.mark.django_db
def test_every_node_is_an_upstream_server_once():
    conf = _render("--node=10.0.0.11:8000", "--node=10.0.0.12:8000", "--node=10.0.0.11:8000")

    for upstream in ("coremetrics_by_client", "coremetrics_any"):
        block = conf.split(f"upstream {upstream} {{")[1].split("}")[0]
        servers = [
            line.split()[1] for line in block.splitlines() if line.strip().startswith("server ")
        ]
        assert servers == ["10.0.0.11:8000", "10.0.0.12:8000"]


@pytest.mark.django_db
def test_standalone_configuration_passes_nginx_test(tmp_path):
    ClientFactory(is_heavy=True)
    conf = _render("--node=127.0.0.1:8001", "--node=[::1]:8002", "--listen=8080", "--standalone")

    result = _nginx_test(tmp_path, conf)

    assert result.returncode == 0, result.stderr


@pytest.mark.django_db
def test_conf_d_file_passes_nginx_test_in_the_http_context(tmp_path):
    ClientFactory(is_heavy=True)
    (tmp_path / "coremetrics.conf").write_text(
        _render("--node=unix:/run/coremetrics/node.sock", "--server-name=cdn.shop.example")
    )
    # Debian's nginx.conf, reduced to what matters: conf.d files inside the http block.
    main = (
        "pid nginx.pid;\nevents {}\nhttp {\n"
        "client_body_temp_path body; proxy_temp_path proxy; fastcgi_temp_path fastcgi;\n"
        "uwsgi_temp_path uwsgi; scgi_temp_path scgi; access_log off;\n"
        "include coremetrics.conf;\n}\n"
    )

    result = _nginx_test(tmp_path, main)

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "option",
    [
        "--node=10.0.0.11:8000; include /etc/passwd",
        "--node=10.0.0.11",
        "--listen=80 default_server",
        "--server-name=a.example; return 200",
    ],
)
@pytest.mark.django_db
def test_anything_that_could_end_a_directive_is_refused(option):
    with pytest.raises(CommandError, match="not "):
        _render("--node=10.0.0.11:8000", option)
