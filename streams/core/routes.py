"""Route selection and parsing: which Treeherder destination, project and push a task reports to."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

from streams.core.fast import new_tuple
from streams.core.model import Stage
from streams.core.rules import Rules

ROUTE_FORM = "<prefix>.v2.<project>.<revision>[.<pushId>]"


class TreeherderRoute(NamedTuple):
    """A parsed ``<prefix>.v2.<project>.<revision>[.<pushId>]`` route."""

    route: str
    prefix: str
    project: str  # for GitHub routes (owner/project), the part after the slash
    revision: str
    push_id: int  # 0 when the route has none


class RouteProblem(ValueError):
    """The task's routes cannot be used; ``ignore`` tells a task not meant for us from a broken one."""

    def __init__(self, reason: str, *, ignore: bool = False, stage: Stage = Stage.ROUTE) -> None:
        super().__init__(reason)
        self.reason = reason
        self.ignore = ignore
        self.stage = stage


def select_route(routes: Sequence[str], rules: Rules) -> TreeherderRoute:
    """The one route the task reports to Treeherder by; raise RouteProblem when there is not exactly one."""
    prefixes = rules.route_prefixes
    starts = rules.route_starts  # "<prefix>." for each prefix: one C-level startswith per route
    matching = []
    try:
        for route in routes:  # a plain loop: a comprehension costs a function call of its own before Python 3.12
            if route.startswith(starts) or route in prefixes:
                matching.append(route)
    except AttributeError:
        index, value = next((i, r) for i, r in enumerate(routes) if type(r) is not str)
        raise RouteProblem(
            f"task.routes[{index}]: expected a string, got {type(value).__name__}", stage=Stage.TASK
        ) from None
    chosen = list(dict.fromkeys(matching)) if len(matching) > 1 else matching
    if not chosen:
        raise RouteProblem(f"no route starts with {' or '.join(prefixes)}: not a Treeherder task", ignore=True)
    if len(chosen) > 1:
        raise RouteProblem(f"{len(chosen)} routes select a Treeherder destination, expected one: {chosen}")
    return parse_route(chosen[0])


@lru_cache(maxsize=4096)
def parse_route(route: str) -> TreeherderRoute:
    """The parts of one route; cached, since every task of a push reports by the same route (errors are not)."""
    words = route.split(".")
    if len(words) not in (4, 5) or words[1] != "v2":
        raise RouteProblem(f"route {route!r} does not have the form {ROUTE_FORM}")
    prefix, _, project, revision, *rest = words
    owner, slash, name = project.rpartition("/")
    if slash and (not owner or "/" in owner):
        raise RouteProblem(f"route {route!r}: project {project!r} is neither <project> nor <owner>/<project>")
    if not name or not revision:
        raise RouteProblem(f"route {route!r} has an empty project or revision ({ROUTE_FORM})")
    push_id = 0
    if rest:
        if not rest[0].isascii() or not rest[0].isdigit():
            raise RouteProblem(f"route {route!r}: push id {rest[0]!r} is not a non-negative integer")
        push_id = int(rest[0])
    return new_tuple(TreeherderRoute, (route, prefix, name, revision, push_id))
