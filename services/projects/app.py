"""The projects HTTP API for gunicorn: `gunicorn 'services.projects.app:build()'`."""

from services.kernel.service import app_factory
from services.projects.service import DEFINITION


def build():
    return app_factory(DEFINITION)
