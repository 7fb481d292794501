# One image for every app of the platform: the three services (API, relay, consumers), the
# gateway and its feed worker, and the web client (its templates, static files and message
# catalogue are package data of `web`). The Deployment chooses the command; the defaults below
# serve the gateway. Build (docs/operations.md, "Build the image"):
#   docker build --build-arg PYTHON_DIGEST=sha256:<digest of python:3.11-slim-bookworm> -t ghcr.io/haicang/cocreate:<tag> .
# The base image is taken by its digest, which the release step looks up and passes in; there is
# no default: without it the build stops at the first line ("PYTHON_DIGEST: is not allowed to be
# unset"). The tag before the digest only says what the digest is of.
ARG PYTHON_DIGEST
FROM python:3.11-slim-bookworm@${PYTHON_DIGEST:?} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY deploy/requirements.lock ./deploy/requirements.lock
# --no-deps: the lock pins every runtime dependency, transitive ones included; --require-hashes:
# pip installs only files whose sha256 the lock lists (bin/lock writes them).
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --require-hashes --no-deps -r deploy/requirements.lock
COPY pyproject.toml README.md ./
COPY services ./services
COPY gateway ./gateway
COPY cocreate_client ./cocreate_client
COPY web ./web
# The import check runs outside /src, so it sees the installed package only; the web client's
# templates, vendored static files and .po catalogue must have been installed with it. A pip call
# of its own: the package is the local source, which has no hash to check (--require-hashes above
# would refuse it).
RUN /opt/venv/bin/pip install --no-deps . \
 && cd / && /opt/venv/bin/python -c "import services.projects.app, services.volunteers.app, services.feedback.app, gateway.app, web.app; \
from pathlib import Path; import web; root = Path(web.__file__).parent; \
missing = [p for p in ('templates/base.html', 'static/vendor/htmx/htmx.min.js', 'translations/zh_Hans_CN/LC_MESSAGES/messages.po') if not (root / p).is_file()]; \
assert not missing, f'not installed with the package: {missing}'"

FROM python:3.11-slim-bookworm@${PYTHON_DIGEST:?}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    COCREATE_DATA_DIR=/tmp/var \
    GUNICORN_BIND=0.0.0.0:8000 \
    GUNICORN_WORKER_TMP_DIR=/tmp \
    COCREATE_APP_NAME=gateway
COPY --from=build /opt/venv /opt/venv
# The source stays in the image only as the installed package; no compilers, no caches.
RUN groupadd --gid 10001 cocreate && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin cocreate
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000 8080 9100
# The same commands the local platform runs (Procfile), for example:
#   gunicorn -c python:services.kernel.gunicorn_conf 'services.projects.app:build()'
#   python -m services.projects relay            (COCREATE_HEALTH_PORT=9100 for probes and metrics)
#   python -m services.volunteers consumer volunteers.project-labour
#   python -m services.feedback sweep-overdue    (a CronJob)
#   python -m gateway feed
#   gunicorn -c python:services.kernel.gunicorn_conf 'web.app:build()'   (GUNICORN_BIND=0.0.0.0:8080)
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import os, urllib.request; port = os.environ.get('COCREATE_HEALTH_PORT') or os.environ['GUNICORN_BIND'].rsplit(':', 1)[1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2)"
CMD ["gunicorn", "-c", "python:services.kernel.gunicorn_conf", "gateway.app:build()"]
