"""Old import paths that still work for one release, each with a warning that names the new path.

Before the core was split into layers (kernel, llm, optimizers, engine, gateway, app, testing) every
module sat in ``opto_core/`` itself. Code written against those paths (``from opto_core.loop import
optimize``) keeps working: a finder on ``sys.meta_path`` answers for the old module names with the
new module, and warns once per import with `DeprecationWarning`. Adapters register their own moved
modules with `register`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import FrameType, ModuleType
from typing import Any, Mapping

#: old module -> (new module, what users should import instead)
MOVED: dict[str, tuple[str, str]] = {}


def _table(old_to_new: Mapping[str, str], public: str) -> dict[str, tuple[str, str]]:
    return {old: (new, public) for old, new in old_to_new.items()}


MOVED.update(
    _table(
        {
            "opto_core.graph": "opto_core.kernel.graph",
            "opto_core.feedback": "opto_core.kernel.feedback",
            "opto_core.provenance": "opto_core.kernel.provenance",
            "opto_core.backward": "opto_core.kernel.backward",
            "opto_core.render": "opto_core.kernel.render",
            "opto_core.parameters": "opto_core.kernel.parameters",
            "opto_core.code": "opto_core.kernel.code",
            "opto_core.code_policy": "opto_core.kernel.code_policy",
            "opto_core.binding": "opto_core.kernel.binding",
            "opto_core.conversation": "opto_core.kernel.conversation",
            "opto_core.trace": "opto_core.kernel.trace",
            "opto_core.values": "opto_core.kernel.values",
            "opto_core.secrets": "opto_core.kernel.redact",
            "opto_core.local": "opto_core.llm.local",
            "opto_core.usage": "opto_core.llm.usage",
            "opto_core.loop": "opto_core.engine.loop",
            "opto_core.settings": "opto_core.engine.settings",
            "opto_core.rundir": "opto_core.engine.rundir",
            "opto_core.approval": "opto_core.engine.approval",
            "opto_core.target": "opto_core.engine.target",
            "opto_core.background": "opto_core.engine.background",
            "opto_core.executors": "opto_core.engine.executors",
            "opto_core.ray_executor": "opto_core.engine.executors.ray_cluster",
            "opto_core.cli": "opto_core.app.cli",
            "opto_core.demo": "opto_core.app.demo",
            "opto_core.report": "opto_core.app.report",
            "opto_core.drawing": "opto_core.app.drawing",
            "opto_core.scripted_server": "opto_core.testing.scripted_server",
            # issue 21: the LLM optimizers' base left the protocol's module
            "opto_core.optimizers.base": "opto_core.optimizers.llm_optimizer",
        },
        "opto_core",
    )
)


def register(old_to_new: Mapping[str, str], public: str) -> None:
    """Add moved modules (an adapter's), whose names users should import from ``public``."""
    MOVED.update(_table(old_to_new, public))


def _user_stacklevel() -> int:
    """The ``stacklevel`` that points at the user's import line.

    `warnings.warn` already skips importlib's own frames, so only this module's frames count.
    """
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and (
        frame.f_code.co_filename == __file__ or frame.f_code.co_filename.startswith("<frozen importlib")
    ):
        if frame.f_code.co_filename == __file__:
            level += 1
        frame = frame.f_back
    return level


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, old: str, new: str, public: str) -> None:
        self.old, self.new, self.public = old, new, public

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{self.old} moved to {self.new} (an internal path); import its public names from "
            f"{self.public}. The old path will be removed in the next release.",
            DeprecationWarning,
            stacklevel=_user_stacklevel(),
        )
        module = importlib.import_module(self.new)
        self._spec = module.__spec__  # importlib sets __spec__ to the old name's; put the real one back
        return module

    def exec_module(self, module: ModuleType) -> None:
        """The new module is already executed: only restore its own spec."""
        module.__spec__ = self._spec


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        moved = MOVED.get(fullname)
        if moved is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(fullname, *moved))


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())


def keep_functions(package: ModuleType, names: tuple[str, ...]) -> None:
    """Keep ``package.<name>`` the public function when an old module of the same name is imported.

    ``opto_core.backward`` and ``opto_core.render`` were modules and are functions; importing the
    old module path makes importlib set the package attribute to the module, which would shadow the
    function. The package's class refuses exactly that assignment.
    """

    class _Package(ModuleType):
        def __setattr__(self, name: str, value: Any) -> None:
            if name in names and isinstance(value, ModuleType):
                return
            super().__setattr__(name, value)

    package.__class__ = _Package


def deprecated_attribute(package: str, name: str, old_names: Mapping[str, str]) -> Any:
    """A layer package's ``__getattr__``: a name users once imported from ``package`` itself."""
    module = old_names.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    warnings.warn(
        f"import {name} from opto_core, not {package} (the old path will be removed in the next release)",
        DeprecationWarning,
        stacklevel=3,
    )
    value = getattr(importlib.import_module(module), name)
    setattr(sys.modules[package], name, value)  # warned once; later lookups are plain attributes
    return value
