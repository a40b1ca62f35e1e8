"""Tracking a run where users already look: ``optimize(..., tracking="mlflow")``.

A tracker is an ``on_event`` listener (`opto_core.engine.events`) that records the run somewhere
else: each step's parameters, scores, decision, token use and cost, and at the end the values file,
the report and the best graph. ``tracking`` is a name from `TRACKERS` (``"mlflow"``), or a tracker
object itself (anything callable with an event, e.g. ``MlflowTracker(experiment="prompts")``).

Trackers are resolved by name like demo recipes: ``"module:attribute"`` strings, imported only when
asked for, so the engine never imports what draws reports (the app layer) or a tracking library.
Other packages add theirs with `register_tracker` or the ``opto_core.trackers`` entry-point group.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, Callable

__all__ = ["TRACKERS", "make_tracker", "register_tracker"]

#: Built-in trackers: name -> "module:attribute" of a factory called with no arguments.
TRACKERS: dict[str, str] = {"mlflow": "opto_core.app.tracking:MlflowTracker"}
ENTRY_POINT_GROUP = "opto_core.trackers"


def register_tracker(name: str, factory: str) -> None:
    """Make ``tracking=name`` build a tracker with ``factory`` (``"module:attribute"``)."""
    if ":" not in factory:
        raise ValueError(f"a tracker factory is 'module:attribute', got {factory!r}")
    TRACKERS[name] = factory


def _known() -> dict[str, str]:
    from importlib.metadata import entry_points

    found = {point.name: point.value for point in entry_points(group=ENTRY_POINT_GROUP)}
    return {**found, **TRACKERS}


def make_tracker(tracking: Any) -> Callable[[Any], Any] | None:
    """The listener ``tracking`` asks for: None for None, the object itself when it is callable, or a
    tracker built from its name (`TRACKERS`). An unknown name is a `ValueError` listing the known ones."""
    if tracking is None or tracking is False:
        return None
    if callable(tracking):
        return tracking
    if not isinstance(tracking, str):
        raise TypeError(
            f"tracking must be a tracker name ({', '.join(sorted(_known()))}) or a tracker object "
            f"(called with each event), got {type(tracking).__name__}"
        )
    known = _known()
    if tracking not in known:
        raise ValueError(f"unknown tracking {tracking!r}; known: {', '.join(sorted(known))}")
    module, _, attribute = known[tracking].partition(":")
    factory: Any = import_module(module)
    for part in attribute.split("."):
        factory = getattr(factory, part)
    return factory()
