import argparse
import re

from django.core.management.base import BaseCommand
from django.template.loader import render_to_string

from coremetrics.selectors import clients_heavy_keys
from delivery.selectors import KEY_RE

# What nginx takes as a `server` address and a `listen` address; anything else (a space, a
# semicolon, a brace) could end the directive and smuggle in another.
NODE_RE = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}|unix:/[A-Za-z0-9_./-]+")
LISTEN_RE = re.compile(r"(?:(?:[0-9.]+|\[[0-9A-Fa-f:.]+\]):)?[0-9]{1,5}")
SERVER_NAME_RE = re.compile(r"[A-Za-z0-9.*_-]+")


def _matching(pattern: re.Pattern, what: str):
    def parse(value: str) -> str:
        if not pattern.fullmatch(value):
            raise argparse.ArgumentTypeError(f"not {what}: {value!r}")
        return value

    return parse


class Command(BaseCommand):
    help = (
        "Print the nginx configuration for delivery nodes behind nginx: routes by client with "
        "consistent hashing, by campaign for the clients marked heavy (docs/deployment.md)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--node",
            action="append",
            required=True,
            type=_matching(NODE_RE, "HOST:PORT or unix:/PATH"),
            help="A node's address, e.g. 10.0.0.11:8000; once per node.",
        )
        parser.add_argument(
            "--listen",
            default="80",
            type=_matching(LISTEN_RE, "PORT or ADDRESS:PORT"),
            help="Where nginx listens (default 80).",
        )
        parser.add_argument(
            "--server-name",
            default="_",
            type=_matching(SERVER_NAME_RE, "a host name"),
            help="The public host name (default _: any).",
        )
        parser.add_argument(
            "--standalone",
            action="store_true",
            help="A complete nginx.conf for `nginx -p DIR` (paths under DIR), instead of the "
            "http-context file for /etc/nginx/conf.d/.",
        )

    def handle(self, *args, node, listen, server_name, standalone, **options):
        context = {
            "nodes": list(dict.fromkeys(node)),
            "listen": listen,
            "server_name": server_name,
            "standalone": standalone,
            "heavy_keys": [key for key in clients_heavy_keys() if KEY_RE.fullmatch(key)],
        }
        self.stdout.write(render_to_string("delivery/nginx.conf", context), ending="")
