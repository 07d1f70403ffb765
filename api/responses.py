"""The API's JSON response: a body that cannot be UTF-8 (a lone surrogate in a stored text)
is sent with each such string made printable instead of failing the request."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from graders.result import printable_data


class PrintableJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:  # the rare body: only it pays for the walk
            return super().render(printable_data(content))
