"""Run a WPS server for the tests: the real app, the discovered processes plus the
test-only ones, and a token per test user (``python -m tests.wps.server``)."""

from __future__ import annotations

import hmac
import logging
import sys

from werkzeug.wrappers import Request

from geoportal.settings import load_settings
from tests.wps.procs import TEST_PROCESSES
from wps_processes import processes
from wps_processes.app import Auth, create_app, header_token, serve

TOKENS = {"alice": "alice-secret-token", "bob": "bob-secret-token"}


class TokenMapAuth(Auth):
    """Test-only: one fixed token per user."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self.tokens = tokens

    def user(self, request: Request) -> str | None:
        given = header_token(request) or ""
        for user, token in self.tokens.items():
            if hmac.compare_digest(given, token):
                return user
        return None


def build_app(settings=None):
    settings = settings or load_settings()
    procs = processes() + [cls() for cls in TEST_PROCESSES]
    return create_app(settings, auth=TokenMapAuth(TOKENS), processes=procs)


def main() -> int:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
    )
    settings = load_settings()
    serve(build_app(settings), "127.0.0.1", settings.wps.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
