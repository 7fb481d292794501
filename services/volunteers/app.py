"""The volunteers HTTP API for gunicorn: `gunicorn 'services.volunteers.app:build()'`."""

from services.kernel.service import app_factory
from services.volunteers.service import DEFINITION


def build():
    return app_factory(DEFINITION)
