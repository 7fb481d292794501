"""The web client (网页端): residents and representatives use the platform in a browser, in Chinese
(English on request); visitors who are not signed in see the public pages (共享 transparency).

A separate Flask app and a client of the gateway's public API only: every read and write goes
through :mod:`cocreate_client` to ``/api/v1``; no service code is imported. Pages are rendered on
the server with Jinja2, htmx makes links and forms partial updates, Flask-Babel translates.
Sessions are kept on the server (Flask-Session on the web client's own database), so the gateway
token never reaches the browser. See ``web/README.md``.
"""
