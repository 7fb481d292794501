"""What only a real HTTP server shows: over-long URLs and chunked bodies, under gunicorn as the
platform runs the apps. Each answer is in the one JSON error shape, never gunicorn's HTML."""

from __future__ import annotations

import json
import socket

import pytest

from tests.integration.test_hostile_input import ADMIN, PROPOSAL, RESIDENT
from tests.support.servers import ServiceServer

pytestmark = pytest.mark.broker  # a platform-level test: it runs a gunicorn process


def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65_536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def chunked(body: bytes, size: int = 65_536) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
                    for i in range(0, len(body), size)) + b"0\r\n\r\n"


def assert_json_error(status: int, headers: dict, body: bytes, expected: int) -> dict:
    assert status == expected, body[:300]
    assert headers["content-type"].startswith("application/json"), headers
    error = json.loads(body)
    assert set(error) == {"code", "status", "message", "errors"} and error["code"] == expected
    return error


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    server = ServiceServer("projects", tmp_path_factory.mktemp("hostile-http"), workers=1).start()
    yield server
    server.stop()


def test_over_long_urls_are_414_in_json_at_any_length(projects):
    auth = RESIDENT.headers["Authorization"].encode()
    for length in (9_000, 20_000, 200_000):  # gunicorn alone would answer HTML from 8 190 bytes on
        request = (b"GET /projects?q=" + b"a" * length + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                   b"Authorization: " + auth + b"\r\n\r\n")
        error = assert_json_error(*exchange(projects.port, request), 414)
        assert "url" in error["errors"]


def test_a_chunked_body_over_the_limit_is_413_and_one_within_it_is_accepted(projects):
    auth = ADMIN.headers["Authorization"].encode()
    head = (b"POST /communities HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nAuthorization: " + auth + b"\r\n\r\n")
    too_large = json.dumps({"community_id": "big", "name": "x" * 1_200_000}).encode()
    assert_json_error(*exchange(projects.port, head + chunked(too_large)), 413)
    community = {"community_id": "hostile", "name": "海沧社区", "district": "海沧区",
                 "grids": [{"grid_id": "g1", "name": "第一网格"}]}
    status, _headers, body = exchange(projects.port, head + chunked(json.dumps(community).encode(), size=7))
    assert status == 201, body[:300]
    resident = RESIDENT.headers["Authorization"].encode()
    proposal = (b"POST /projects HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\nAuthorization: " + resident + b"\r\n\r\n")
    status, _headers, body = exchange(projects.port, proposal + chunked(json.dumps(PROPOSAL).encode(), size=50))
    assert status == 201, body[:300]
