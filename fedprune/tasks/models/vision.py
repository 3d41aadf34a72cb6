"""The one place that imports torchvision: its model classes (ResNet, MobileNetV2).

torchvision's model code is pure Python, but importing it also registers its compiled
operators (`nms`, `roi_align`, …). A torchvision wheel built for another torch variant (PyPI's
0.28 wheel is built against the CUDA torch; a CPU-only torch 2.13 beside it) fails at that
step with `RuntimeError: operator torchvision::nms does not exist`, in
`torchvision._meta_registrations`, before any model is reachable. None of those operators is
used by the classifiers here, so on that one error the import is retried with that module
stubbed out. Imported lazily (on first model build), so runs of other models never pay for it.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
from types import ModuleType

from torch import nn

_META = "torchvision._meta_registrations"


def torchvision_models() -> ModuleType:
    """`torchvision.models`, importable even where torchvision's compiled ops do not load."""
    try:
        return importlib.import_module("torchvision.models")
    except RuntimeError as error:
        if "torchvision::nms does not exist" not in str(error):
            raise
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]  # the half-imported package: import again from scratch
    sys.modules[_META] = types.ModuleType(_META)
    return importlib.import_module("torchvision.models")


def loadable(base: type[nn.Module], module: str, name: str) -> type[nn.Module]:
    """A subclass of torchvision's `base`, named `name` in fedprune's `module`, that the
    models are made instances of. A pickled model (`torch.save`, as the MLflow worker process
    loads it) then names this class first; importing `module` and asking it for `name` (its
    module `__getattr__` calls this) goes through `torchvision_models` before pickle looks up
    torchvision's own block classes, which a plain `import torchvision` could not load."""
    namespace = sys.modules[module]
    found = namespace.__dict__.get(name)
    if found is None:
        found = type(name, (base,), {"__module__": module, "__qualname__": name})
        setattr(namespace, name, found)
    return found


def class_getter(module: str, name: str, base: str) -> Callable[[str], type[nn.Module]]:
    """A module `__getattr__` that makes `module.name`, the `loadable` subclass of
    torchvision's `base`, on first use."""

    def __getattr__(attribute: str) -> type[nn.Module]:
        if attribute != name:
            raise AttributeError(f"module {module!r} has no attribute {attribute!r}")
        return loadable(getattr(torchvision_models(), base), module, name)

    return __getattr__
