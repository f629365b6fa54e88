"""A tiny router: method + path template → handler, for the API and inspection.

Templates read like Mailchimp's documentation (``/lists/{list_id}/members``)
and double as the endpoint names the call log counts, so a test can say
``calls.count("PUT /lists/{list_id}/members/{subscriber_hash}")``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import unquote

C = TypeVar("C")
TRUE_WORDS = ("true", "1", "yes")


@dataclass(frozen=True)
class Request:
    """A parsed request: path parameters are already URL-decoded."""

    method: str
    path: str
    params: Mapping[str, str]
    query: Mapping[str, str]
    body: Any

    def flag(self, name: str) -> bool:
        # The official client sends Python booleans as "True"/"False".
        return self.query.get(name, "").lower() in TRUE_WORDS


@dataclass(frozen=True)
class Answer:
    """What to send back; a ``body`` of None means no body (as for a 204)."""

    status: int
    body: Any = None


@dataclass(frozen=True)
class Route(Generic[C]):
    method: str
    template: str
    handler: Callable[[C, Request], Answer]
    regex: re.Pattern[str] = field(compare=False)

    @property
    def endpoint(self) -> str:
        return f"{self.method} {self.template}"


class Router(Generic[C]):
    """Routes in the order added; the first template that matches wins."""

    def __init__(self) -> None:
        self._routes: list[Route[C]] = []

    def add(
        self, method: str, template: str
    ) -> Callable[[Callable[[C, Request], Answer]], Callable[[C, Request], Answer]]:
        """Decorator registering a handler for ``method template``."""

        def register(handler: Callable[[C, Request], Answer]) -> Callable[[C, Request], Answer]:
            regex = re.compile(re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(template)))
            self._routes.append(Route(method, template, handler, regex))
            return handler

        return register

    def resolve(self, method: str, path: str) -> tuple[Route[C] | None, dict[str, str], bool]:
        """The route for ``method path``, its parameters, and whether the path exists.

        The last item tells a 405 (the path exists for another method) from a 404.
        """
        path_known = False
        for route in self._routes:
            found = route.regex.fullmatch(path)
            if found is None:
                continue
            path_known = True
            if route.method == method:
                return route, {k: unquote(v) for k, v in found.groupdict().items()}, True
        return None, {}, path_known

    def endpoints(self) -> list[str]:
        return [r.endpoint for r in self._routes]
