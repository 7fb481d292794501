"""The kernel's Flask subclass (:class:`services.kernel.web.App`): what it remembers per function."""

from __future__ import annotations

import pytest
from flask.views import MethodView

from services.kernel.web import App


def test_whether_a_function_is_a_coroutine_is_decided_once_per_function():
    app = App("test")

    class Resource(MethodView):
        def get(self):
            return "ok"

    def view():
        return "ok"

    async def coroutine_view():
        return "ok"

    for _ in range(3):
        method = Resource().get  # a new bound method each time, as Flask makes one per request
        assert app.ensure_sync(method) is method
        assert app.ensure_sync(view) is view
    assert app._coroutine_functions == {Resource.get: False, view: False}
    for _ in range(2):  # a coroutine function is still handed to Flask's async_to_sync
        with pytest.raises(RuntimeError, match="async"):  # (the 'async' extra is not installed here)
            app.ensure_sync(coroutine_view)
    assert app._coroutine_functions[coroutine_view] is True
