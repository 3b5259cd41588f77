"""The weighting registry: name → WeightFn class, filled by `@register_weighting(name)` (DESIGN §7).

Registration is the only way in, for the built-ins too: their modules (BUILTIN_MODULES) are imported on the
first lookup, then every entry point of the group `wmtp.weightings` (an external package's
`[project.entry-points."wmtp.weightings"] mine = "my_pkg.weight"` imports `my_pkg.weight`, whose class is
decorated). A name registered twice by different classes is an error.

This module imports nothing of wmtp, so `wmtp.config` can look weightings up while validating; plug-in authors use
the same decorator as `wmtp.weighting.register_weighting`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, TypeVar

BUILTIN_MODULES = ("wmtp.weighting.uniform", "wmtp.weighting.rho1", "wmtp.weighting.critic", "wmtp.weighting.group",
                   "wmtp.weighting.gradnorm", "wmtp.weighting.hybrid", "wmtp.weighting.controls")
ENTRY_POINT_GROUP = "wmtp.weightings"

_REGISTRY: dict[str, type] = {}
_loaded = False

W = TypeVar("W", bound=type)


def register_weighting(name: str) -> Callable[[W], W]:
    """Class decorator: make `weighting.name=<name>` select the class and `weighting.<name>.<field>` set the fields
    of its nested pydantic `Config`."""
    if not name.isidentifier():
        raise ValueError(f"a weighting name must be an identifier (it is a config section), got {name!r}")

    def register(cls: W) -> W:
        previous = _REGISTRY.get(name)
        where = (cls.__module__, cls.__qualname__)
        if previous is not None and (previous.__module__, previous.__qualname__) != where:  # not a re-import
            raise ValueError(f"weighting {name!r} is already registered by {previous.__module__}.{previous.__qualname__}")
        if not hasattr(cls, "Config") or not hasattr(cls, "weights"):
            raise TypeError(f"{cls.__qualname__} is not a wmtp.weighting.WeightFn subclass")
        try:
            cls.Config()
        except ValueError as err:  # pydantic's ValidationError is one
            raise TypeError(f"every field of {cls.__qualname__}.Config needs a default (its section is filled with "
                            f"them when a run does not set it): {err}") from None
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return register


def _load() -> None:
    """Import the built-in weightings and the entry points of external packages (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True  # first: the modules imported here look weightings up themselves
    try:
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                ep.load()
            except Exception as err:
                raise ImportError(f"the weighting entry point {ep.name} = {ep.value!r} ({ENTRY_POINT_GROUP}) "
                                  f"failed to import: {type(err).__name__}: {err}") from err
    except BaseException:
        _loaded = False  # a later lookup tries again instead of using a half-filled registry
        raise


def weightings() -> dict[str, Any]:
    """Every registered weighting: name → WeightFn class (in registration order)."""
    _load()
    return dict(_REGISTRY)


def weighting_class(name: str) -> Any:
    """The WeightFn class registered as `name`; a clear error listing the registered names otherwise."""
    classes = weightings()
    if name not in classes:
        raise ValueError(f"unknown weighting {name!r}; registered: {', '.join(classes)}")
    return classes[name]


def method_class(name: str, control_of: str) -> Any:
    """The class whose declarations (needs, train_on, packing, reference) a run with `weighting.name=name` follows:
    the weighting itself, or for a control the weighting it resamples."""
    cls = weighting_class(name)
    return weighting_class(control_of) if cls.is_control else cls


def method_classes(wcfg: Any) -> list[Any]:
    """The classes whose declarations a run with the WeightingConfig `wcfg` follows: `method_class`'s, or for a
    combination of weightings (a class with a `components(wcfg)` classmethod, e.g. hybrid) each component's."""
    cls = method_class(wcfg.name, wcfg.control_of)
    components = getattr(cls, "components", None)
    return [weighting_class(name) for name in components(wcfg)] if components is not None else [cls]


def declared_train_on(wcfg: Any) -> str | None:
    """The data.train_on the classes of `method_classes(wcfg)` declare (None: any); two different ones are refused."""
    declared = {c.train_on for c in method_classes(wcfg)} - {None}
    if len(declared) > 1:
        raise ValueError(f"weighting.name={wcfg.name} combines weightings that declare different data.train_on: "
                         f"{', '.join(sorted(declared))}")
    return declared.pop() if declared else None


def used_sections(wcfg: Any) -> set[str]:
    """The `weighting.<section>`s a run with `wcfg` reads: its weighting's, a control's method's, and the
    components' of a combination."""
    return {wcfg.name, method_class(wcfg.name, wcfg.control_of).name, *(c.name for c in method_classes(wcfg))}


def build_weight_fn(wcfg: Any, *, seed: int = 0) -> Any:
    """The WeightFn a run with the WeightingConfig `wcfg` trains with; seed: the run seed (controls draw from it)."""
    return weighting_class(wcfg.name).from_config(wcfg, seed=seed)
