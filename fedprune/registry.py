"""One registry pattern for every extension point (strategies, pruning methods, models, data
sets, partitioners, schedules).

An entry is one class or function in one file, registered by name with its parameters as a
pydantic model beside it. The config's section for an extension point is the union of the
registered parameter models, tagged by name (`pruning: {method: feddst, every: 5}`), so the
allowed names and each entry's settings come from here and nowhere else; an unknown name fails
validation listing what is registered.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Literal, TypeVar, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

T = TypeVar("T")


def import_entries(package: str, path: list[str]) -> None:
    """Import every module of an extension point's package, so that each file registers its
    entry: adding a strategy, method, model, … is one new file, nothing else to edit."""
    for module in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{module.name}")


class Params(BaseModel):
    """Base of every settings model: unknown keys fail (a typo is an error, not ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    value: T
    """The registered class or function."""
    params: type[Params]
    """Its parameters, tagged with its name (a subclass of the model it registered)."""


class Registry(Generic[T]):
    """Names → (class or function, parameters) for one extension point.

    `kind` names the extension point in messages; `tag` is the config key that chooses an
    entry (`method`, `name`, `kind`); `default` the entry a config gets when it names none."""

    def __init__(self, kind: str, *, tag: str, default: str, base: type[Params] = Params):
        self.kind, self.tag, self.default, self.base = kind, tag, default, base
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, params: type[Params] | None = None) -> Callable[[T], T]:
        """Decorator: `@STRATEGIES.register("fedavg")`, with `params` its settings model."""

        def add(value: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            fields: Any = {self.tag: (Literal[name], name)}
            tagged = create_model(
                (params or self.base).__name__, __base__=params or self.base, **fields
            )
            tagged.__doc__ = (params or self.base).__doc__
            # A unique qualified name in this module, so pickle (worker processes) finds it.
            tagged.__module__, tagged.__qualname__ = __name__, f"{self.kind}:{name}"
            setattr(sys.modules[__name__], tagged.__qualname__, tagged)
            self._entries[name] = Entry(name, value, tagged)
            return value

        return add

    def names(self) -> list[str]:
        return list(self._entries)

    def __getitem__(self, name: str) -> Entry[T]:
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} '{name}'; registered: {', '.join(self.names())}")
        return self._entries[name]

    def get(self, name: str) -> T:
        return self[name].value

    def check(self, name: str) -> str:
        """A pydantic validator for a plain name field."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} '{name}'; registered: {', '.join(self.names())}")
        return name

    def section(self) -> Any:
        """The config type of this extension point: the union of the registered parameter
        models, chosen by `tag` (the default entry when the tag is left out; a bare name is
        short for `{tag: name}`, e.g. `task: regression`)."""
        models = tuple(entry.params for entry in self._entries.values())
        union = models[0] if len(models) == 1 else Union[models]  # noqa: UP007

        def tag_default(raw: object) -> object:
            if isinstance(raw, str):
                return {self.tag: raw}
            if isinstance(raw, dict) and self.tag not in raw:
                return {self.tag: self.default, **raw}
            return raw

        return Annotated[union, Field(discriminator=self.tag), BeforeValidator(tag_default)]

    def defaults(self) -> Params:
        """The settings of the default entry, all defaults."""
        return self[self.default].params()
