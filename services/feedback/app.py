"""The feedback HTTP API for gunicorn: `gunicorn 'services.feedback.app:build()'`."""

from services.kernel.service import app_factory
from services.feedback.service import DEFINITION


def build():
    return app_factory(DEFINITION)
