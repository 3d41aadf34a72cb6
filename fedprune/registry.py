"""One registry pattern for every extension point (strategies, pruning methods, models, data
sets, partitioners, schedules).

An entry is one class or function in one file, registered by name with its parameters as a
pydantic model beside it. The config's section for an extension point is the union of the
registered parameter models, tagged by name (`pruning: {method: feddst, every: 5}`), so the
allowed names and each entry's settings come from here and nowhere else; an unknown name fails
validation listing what is registered. Where users bring their own code (models, data sets),
the name may also be an import path, `package.module:callable` (`Registry(imported=...)`).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Literal, TypeVar, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    create_model,
)

from fedprune.errors import UserError

T = TypeVar("T")
IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
IMPORTED = "import"
"""The union tag of an entry named by import path."""


def is_import_path(name: str) -> bool:
    return ":" in name


def _well_formed(path: str) -> str:
    if not IMPORT_PATH.match(path):
        raise ValueError(f"'{path}' is not an import path of the form package.module:callable")
    return path


ImportPath = Annotated[str, AfterValidator(_well_formed)]
"""A config field holding `package.module:callable` (checked for form, imported later)."""


def load_callable(path: str, field: str) -> Callable[..., Any]:
    """The callable at `package.module:callable`; a UserError naming `field` if it does not
    import or is not callable."""
    if not IMPORT_PATH.match(path):
        raise UserError(
            f"{field}: '{path}' is not an import path of the form package.module:callable"
        )
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # the user's module failing to import, for any reason
        raise UserError(f"{field}: cannot import '{module_name}': {error}") from None
    found = getattr(module, attribute, None)
    if not callable(found):
        raise UserError(f"{field}: '{module_name}' has no callable '{attribute}'")
    return found


def call_imported(path: str, field: str, returns: type, what: str, **arguments: Any) -> Any:
    """Import the callable at `path`, check it takes these keywords, call it, and check it
    returned a `returns` (`what` names that type in messages); a UserError naming `field`
    for each way it can fail."""
    function = load_callable(path, field)
    try:
        inspect.signature(function).bind(**arguments)
    except TypeError as error:
        names = ", ".join(arguments)
        raise UserError(
            f"{field}: {function.__qualname__} cannot be called with {names}: {error}"
        ) from None
    except ValueError:  # no signature to inspect (a builtin): the call will tell
        pass
    result = function(**arguments)
    if not isinstance(result, returns):
        raise UserError(f"{field}: {path} returned {type(result).__name__}, not {what}")
    return result


def import_entries(package: str, path: list[str]) -> None:
    """Import every module of an extension point's package, so that each file registers its
    entry: adding a strategy, method, model, … is one new file, nothing else to edit."""
    for module in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{module.name}")


class Params(BaseModel):
    """Base of every settings model: unknown keys fail (a typo is an error, not ignored), and
    so does every float that is not finite (`.inf`, `.nan`), whatever the field."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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
    entry (`method`, `name`, `kind`); `default` the entry a config gets when it names none;
    `imported`, when given, the settings of an entry named by import path instead."""

    def __init__(
        self,
        kind: str,
        *,
        tag: str,
        default: str,
        base: type[Params] = Params,
        imported: type[Params] | None = None,
    ):
        self.kind, self.tag, self.default, self.base = kind, tag, default, base
        self.imported = imported
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
        chosen: Any = Field(discriminator=self.tag)
        if self.imported is not None:
            members = [Annotated[e.params, Tag(e.name)] for e in self._entries.values()]
            union = Union[(*members, Annotated[self.imported, Tag(IMPORTED)])]  # noqa: UP007
            tag = self.tag

            def choose(raw: object) -> object:
                name = raw.get(tag) if isinstance(raw, dict) else getattr(raw, tag, None)
                return IMPORTED if isinstance(name, str) and is_import_path(name) else name

            choose.__name__ = tag  # messages name the key: "Input tag 'x' found using name()"
            chosen = Discriminator(choose)

        def tag_default(raw: object) -> object:
            if isinstance(raw, str):
                return {self.tag: raw}
            if isinstance(raw, dict) and self.tag not in raw:
                return {self.tag: self.default, **raw}
            return raw

        return Annotated[union, chosen, BeforeValidator(tag_default)]

    def defaults(self) -> Params:
        """The settings of the default entry, all defaults."""
        return self[self.default].params()
