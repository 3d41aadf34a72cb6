"""KFP v2 components: thin wrappers that load inputs, call one step of `fedprune`, save outputs.

Each folder holds one component (`component.py`, a README). The functions are plain Python so
tests can call them directly; `build` turns one into a KFP component running in the project
image, which already has kfp installed.
"""

from __future__ import annotations

from collections.abc import Callable

from kfp import dsl
from kfp.dsl.python_component import PythonComponent


def build(func: Callable, image: str) -> PythonComponent:
    return dsl.component(func, base_image=image, install_kfp_package=False)
