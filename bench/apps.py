"""Raw WSGI apps for the delivery benchmark (bench/delivery.py): the floor under our endpoint.

    constant      (a) a constant 200-byte JSON body, nothing else
    redis_answer  (b) one Redis HGET of the visitor's answer (REDIS_URL, hash ANSWERS_KEY);
                      the campaign's default answer (DEFAULT_ANSWER_KEY) for a visitor not in it

Neither imports Django: they measure what the server itself costs.
"""

from __future__ import annotations

import json
import os
from urllib.parse import parse_qs

ANSWERS_KEY = "bench:answers"
DEFAULT_ANSWER_KEY = "bench:default-answer"
BODY_BYTES = 200


def _constant_body() -> bytes:
    body = json.dumps({"placement": "bench", "content": None, "padding": ""}).encode()
    # Padded in the string itself so that the body stays valid JSON of exactly BODY_BYTES.
    padding = "x" * (BODY_BYTES - len(body))
    return json.dumps({"placement": "bench", "content": None, "padding": padding}).encode()


CONSTANT_BODY = _constant_body()
assert len(CONSTANT_BODY) == BODY_BYTES


def constant(environ, start_response):
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(BODY_BYTES))],
    )
    return [CONSTANT_BODY]


_redis = None
_default_answer = b"null"


def _redis_get():
    global _redis, _default_answer
    if _redis is None:
        import redis

        # One pool per process, shared by the server's threads; timeouts as the table store's.
        client = redis.Redis.from_url(
            os.environ["REDIS_URL"], socket_timeout=0.5, socket_connect_timeout=0.5
        )
        _default_answer = client.get(DEFAULT_ANSWER_KEY) or b"null"
        _redis = client
    return _redis


def redis_answer(environ, start_response):
    visitor = parse_qs(environ.get("QUERY_STRING", "")).get("v", [""])[0]
    client = _redis_get()
    body = client.hget(ANSWERS_KEY, visitor) if visitor else None
    if body is None:
        body = _default_answer
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]
