"""Finding a project route by the word after the project id, not by trying them all.

aiohttp indexes a dynamic route by its path up to the first variable: every one of the
hub's ~150 routes under `/api/project/{project_id}` shares the key `/api/project`, and
each request under it tried them one by one, in order (about 0.15-0.2 ms per request,
measured: more than a task's SQLite work). `SegmentIndex` is one aiohttp resource holding
those routes, grouped by the segment after the project id (`tasks`, `templates`, ...), so a
request tries only the handful that can match. Matching itself is aiohttp's: each group
holds ordinary aiohttp resources, tried in the order they were added, and a path that
matches with another method still answers 405 with the methods it allows.
"""

from collections.abc import Iterator

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_urldispatcher import (
    AbstractResource,
    AbstractRoute,
    DynamicResource,
    Resource,
    _InfoDict,
    _Resolve,
)
from yarl import URL


class SegmentIndex(AbstractResource):
    """The routes whose path starts with `prefix` and one variable segment, keyed by the
    segment that follows (a route with a variable there is a candidate for every key)."""

    def __init__(self, prefix: str):
        super().__init__()
        self._prefix = prefix.rstrip("/")
        self._depth = self._prefix.count("/") + 2  # index of the key in path.split("/")
        self._resources: list[Resource] = []
        self._by_path: dict[str, Resource] = {}
        self._keys: dict[str | None, list[int]] = {}  # key (None: any) -> resource indexes
        self._candidates: dict[str, list[Resource]] = {}

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Add a route; `path` must start with the prefix and a variable segment."""
        if not path.startswith(self._prefix + "/{"):
            raise ValueError(f"{path} is not under {self._prefix}/{{...}}")
        resource = self._by_path.get(path)
        if resource is None:
            resource = DynamicResource(path)
            self._by_path[path] = resource
            self._resources.append(resource)
            parts = path.split("/")
            key = parts[self._depth] if len(parts) > self._depth else ""
            self._keys.setdefault(None if "{" in key else key,
                                  []).append(len(self._resources) - 1)
            self._candidates.clear()
        resource.add_route(method, handler)

    def _for(self, key: str) -> list[Resource]:
        """The resources that may match a path with this key, in the order added."""
        found = self._candidates.get(key)
        if found is None:
            indexes = sorted(self._keys.get(key, []) + self._keys.get(None, []))
            found = self._candidates[key] = [self._resources[i] for i in indexes]
        return found

    async def resolve(self, request: web.Request) -> _Resolve:
        path = request.rel_url.path_safe
        if not path.startswith(self._prefix + "/"):
            return None, set()
        parts = path.split("/", self._depth + 1)
        key = parts[self._depth] if len(parts) > self._depth else ""
        allowed: set[str] = set()
        for resource in self._for(key) if key in self._keys else self._for_unknown(key):
            match, methods = await resource.resolve(request)
            if match is not None:
                return match, methods
            allowed |= methods
        return None, allowed

    def _for_unknown(self, key: str) -> list[Resource]:
        # A word no route has there: only the routes with a variable there can match (not
        # cached: the key comes from the request).
        return [self._resources[i] for i in self._keys.get(None, [])]

    # What aiohttp asks of every resource.

    @property
    def canonical(self) -> str:
        return self._prefix + "/{...}"

    def url_for(self, **kwargs: str) -> URL:
        """The URL of one of its routes: `route` is the path it was added with, the other
        keywords fill its variables (`url_for(route="/api/project/{project_id}/tasks",
        project_id="1")`); aiohttp's own resource builds it."""
        route = kwargs.pop("route", None)
        resource = self._by_path.get(route) if route is not None else None
        if resource is None:
            raise KeyError(f"no route {route!r} under {self._prefix}")
        return resource.url_for(**kwargs)

    def add_prefix(self, prefix: str) -> None:
        """Mounted in a sub-application: every route, and the index, move under `prefix`."""
        for resource in self._resources:
            resource.add_prefix(prefix)
        self._prefix = prefix + self._prefix
        self._depth = self._prefix.count("/") + 2
        self._candidates.clear()

    def get_info(self) -> _InfoDict:
        return {"prefix": self._prefix}

    def raw_match(self, path: str) -> bool:
        return any(resource.raw_match(path) for resource in self._resources)

    def freeze(self) -> None:
        for resource in self._resources:
            resource.freeze()

    def __len__(self) -> int:
        return sum(len(resource) for resource in self._resources)

    def __iter__(self) -> Iterator[AbstractRoute]:
        for resource in self._resources:
            yield from resource

