"""Finding, loading and describing plugins.

Three sources, loaded in this order:

1. merx's built-in plugins (``merx.builtin``), registered through the same hooks as anyone's;
2. installed distributions that declare an entry point in the ``merx`` group, sorted by
   distribution name, then entry-point name (importlib returns them in sys.path order, which
   differs between machines and would decide which of two plugins a listing shows first);
3. every ``*.py`` file in ``./plugins/`` of the working directory, ``MERX_PLUGINS_DIR`` and
   ``--plugins-dir``, folder by folder, files sorted by name.

Every registration is recorded. A kind and name registered by more than one source (two
distributions, a distribution and a local file, or a built-in and anyone) is *contested*: a
warning says so at load time, and :meth:`Registry.get` refuses the plain name, because
silently keeping one would make what an experiment trains depend on what happens to be
installed. The user picks by qualified name, ``"<qualifier>:<name>"``: the distribution name,
a local file's stem, or ``merx`` for a built-in (``"lowrank-fusion:lmf"``, ``"merx:concat"``).

``MERX_LOAD_PLUGINS`` (comma-separated plugin names; empty for built-ins only) restricts which
external plugins load; ``MERX_NO_LOCAL_PLUGINS=1`` (or :func:`local_plugins_switched_off`)
switches off local plugin folders. A plugin that fails to import or register produces a
warning naming it and the error, and an entry in :attr:`Registry.broken`; merx goes on.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from merx import hookspecs
from merx.errors import ContestedPlugin, UnknownPlugin
from merx.errors import PluginBuildError as _PluginBuildError
from merx.hookspecs import KINDS

_MISSING = inspect.Parameter.empty


class PluginWarning(UserWarning):
    """A plugin could not be loaded or registered; merx carries on without it."""


@dataclass
class Param:
    name: str
    default: Any = _MISSING
    annotation: Any = None

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    def describe(self) -> str:
        return self.name if self.required else f"{self.name}={self.default!r}"


@dataclass
class Plugin:
    """One registered component: a factory plus where it came from."""

    kind: str
    name: str
    factory: Callable
    origin: str  # "built-in", "local file", or "distribution"
    source: str  # module, file path or distribution name
    version: str | None
    hook: str
    params: list[Param] = field(default_factory=list)
    context: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.factory) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    @property
    def help(self) -> str:
        return inspect.getdoc(self.factory) or ""

    @property
    def origin_label(self) -> str:
        """Where it comes from, as :func:`provenance_label` spells it: ``lowrank-fusion 0.1.0``."""
        return _origin_text(self.origin, self.source, self.version)

    @property
    def qualifier(self) -> str:
        """What goes before ``:`` in a qualified name: the distribution, file stem, or ``merx``."""
        if self.origin == "built-in":
            return "merx"
        if self.origin == "local file":
            return Path(self.source).stem
        return self.source

    @property
    def qualified_name(self) -> str:
        """The name that picks this plugin even when its plain name is contested: ``merx:concat``."""
        return f"{self.qualifier}:{self.name}"

    def provenance(self) -> dict:
        """What a run stores about the plugins it used."""
        return {"kind": self.kind, "name": self.name, "origin": self.origin,
                "source": self.source, "version": self.version}

    def build(self, settings: dict, **context):
        """Call the factory with the user's settings plus the context values it asks for."""
        wanted = {k: v for k, v in context.items() if k in self.context}
        return self.factory(**wanted, **settings)


@dataclass(frozen=True)
class BrokenPlugin:
    """A distribution or local file that failed to import, or to register a component.

    One entry per failure (a plugin refused for two factories appears twice). ``source`` is the
    distribution name or the file path; ``error`` says what went wrong."""

    origin: str  # "distribution", "local file" (or "built-in": a bug in merx)
    source: str
    version: str | None
    error: str


def _origin_text(origin: str | None, source: str | None, version: str | None) -> str:
    if origin == "distribution":
        return f"{source} {version}" if version else str(source)
    if origin == "local file":
        return f"local: {source}"
    if origin == "built-in":
        return "built-in"
    return str(origin)


def provenance_label(record: dict) -> str:
    """One plugin of a run, as every command spells it: ``lmf (lowrank-fusion 0.1.0)``,
    ``concat (built-in)``, ``film (local: /path/plugins/film.py)``.

    ``record`` is what a run stores (:meth:`Plugin.provenance`): kind, name, origin, source,
    version."""
    return f"{record['name']} ({_origin_text(record.get('origin'), record.get('source'), record.get('version'))})"


def _canonical(qualifier: str) -> str:
    # Distribution names compare as pip compares them (PEP 503): "Lowrank_Fusion" is "lowrank-fusion".
    return re.sub(r"[-_.]+", "-", qualifier).lower()


def describe_factory(kind: str, factory: Callable) -> tuple[list[Param], list[str]]:
    """Split a factory's parameters into user settings and merx-supplied context."""
    sig = inspect.signature(factory)
    params, context = [], []
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"factory {factory!r} takes *args/**kwargs; declare its parameters by name "
                            "so merx can validate settings")
        if p.name in KINDS[kind].context:
            context.append(p.name)
        else:
            ann = p.annotation if p.annotation is not _MISSING else None
            params.append(Param(p.name, p.default, ann))
    return params, context


class Registry:
    """All plugins of every kind, after loading."""

    def __init__(self) -> None:
        #: Every registration, in load order: kind -> name -> one Plugin per source registering it.
        self.registrations: dict[str, dict[str, list[Plugin]]] = {kind: {} for kind in KINDS}
        #: The first registration of each name (what a listing shows); a contested name has
        #: more in ``registrations``, and :meth:`get` refuses it.
        self.plugins: dict[str, dict[str, Plugin]] = {kind: {} for kind in KINDS}
        #: Every distribution or local file that failed to import or to register something.
        self.broken: list[BrokenPlugin] = []
        self.warnings: list[str] = []
        self.pm = pluggy.PluginManager("merx")
        self.pm.add_hookspecs(hookspecs)
        self._origins: dict[int, tuple[str, str, str | None]] = {}
        #: Whether local plugin folders were switched on when this registry was loaded.
        self.local_enabled = True

    # -- loading ---------------------------------------------------------------------------
    def warn(self, message: str) -> None:
        self.warnings.append(message)
        warnings.warn(message, PluginWarning, stacklevel=3)

    def fail(self, origin: str, source: str, version: str | None, error: str, message: str) -> None:
        """Record a plugin that could not be used (``broken``) and warn with ``message``."""
        self.broken.append(BrokenPlugin(origin, source, version, error))
        self.warn(message)

    def add_module(self, module, origin: str, source: str, version: str | None) -> None:
        try:
            self.pm.register(module, name=f"{origin}:{source}")
        except Exception as exc:  # pluggy validates hook signatures here
            self.fail(origin, source, version, str(exc),
                      f"plugin {source!r} ({origin}) could not be registered: {exc}")
            return
        try:
            # An implementation of a hook that does not exist (a typo) is otherwise ignored silently.
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(module)
            self.fail(origin, source, version, str(exc),
                      f"plugin {source!r} ({origin}) could not be registered: {exc}; "
                      f"the hooks are: {', '.join(k.hook for k in KINDS.values())}, register_commands")
            return
        self._origins[id(module)] = (origin, source, version)

    def collect(self) -> None:
        """Call every registration hook of every plugin, recording who registered what."""
        load_order = {module_id: i for i, module_id in enumerate(self._origins)}
        for kind, hook_name in ((k.name, k.hook) for k in KINDS.values()):
            hook = getattr(self.pm.hook, hook_name)
            # In load order (built-ins, entry points, local files), whatever tryfirst/trylast a
            # plugin declares: no plugin gets to be the first registration by asking.
            for impl in sorted(hook.get_hookimpls(), key=lambda i: load_order[id(i.plugin)]):
                origin, source, version = self._origins[id(impl.plugin)]

                def register(name, factory, _kind=kind, _hook=hook_name, _o=origin, _s=source, _v=version):
                    self._register(_kind, name, factory, _o, _s, _v, _hook)

                args = {"register": register}
                try:
                    impl.function(**{a: args[a] for a in impl.argnames})
                except Exception as exc:
                    self.fail(origin, source, version, f"{hook_name}: {type(exc).__name__}: {exc}",
                              f"plugin {source!r} failed in {hook_name}: {type(exc).__name__}: {exc}")

    def _register(self, kind, name, factory, origin, source, version, hook) -> None:
        label = KINDS[kind].label

        def refuse(problem: str) -> None:
            self.fail(origin, source, version, f"{label} {name!r}: {problem}",
                      f"plugin {source!r}: {label} {name!r} {problem}; ignored")

        if not isinstance(name, str) or not name:
            return refuse("is not a valid name")
        if ":" in name:
            return refuse("has a ':' in its name, which merx reads as '<distribution>:<name>'")
        if not callable(factory):
            return refuse("is not callable")
        taken = self.registrations[kind].get(name, [])
        if any((p.origin, p.source) == (origin, source) for p in taken):
            # A qualified name could not tell the two apart, so this is the plugin's bug, not a contest.
            return refuse("is registered a second time by the same plugin")
        try:
            params, context = describe_factory(kind, factory)
        except (TypeError, ValueError) as exc:
            return refuse(f"has an unusable signature: {exc}")
        plugin = Plugin(kind, name, factory, origin, source, version, hook, params, context)
        taken = self.registrations[kind].setdefault(name, [])
        taken.append(plugin)
        self.plugins[kind].setdefault(name, plugin)
        if len(taken) > 1:
            self.warn(f"{label} {name!r} is contested: {plugin.origin_label} registers it, already registered "
                      f"by {', '.join(p.origin_label for p in taken[:-1])}. An experiment naming {name!r} is "
                      f"refused; it must pick one: {', '.join(repr(p.qualified_name) for p in taken)}")

    # -- lookup ----------------------------------------------------------------------------
    def get(self, kind: str, name: str) -> Plugin:
        """The plugin ``name`` (plain, or qualified as ``"<qualifier>:<name>"``) of ``kind``.

        Raises :class:`UnknownPlugin` when nothing matches and :class:`ContestedPlugin` when a
        plain name is registered by more than one source."""
        by_name = self.registrations[kind]
        qualifier, sep, plain = name.rpartition(":") if isinstance(name, str) else ("", "", name)
        found = by_name.get(plain, []) if isinstance(plain, str) else []
        if sep:
            found = [p for p in found if _canonical(p.qualifier) == _canonical(qualifier)]
        if len(found) == 1:
            return found[0]
        if found:
            raise ContestedPlugin(kind, plain, [(p.qualified_name, p.origin_label) for p in found])
        if sep and by_name.get(plain):
            available = ", ".join(p.qualified_name for p in by_name[plain])
        else:
            available = ", ".join(sorted(by_name)) or "(none)"
        raise UnknownPlugin(kind, name, available)

    def names(self, kind: str) -> list[str]:
        """Plain names, each once, contested or not."""
        return sorted(self.registrations[kind])

    def contested(self, kind: str) -> dict[str, list[Plugin]]:
        """Names registered by more than one source, with every contender in load order."""
        return {name: regs for name, regs in sorted(self.registrations[kind].items()) if len(regs) > 1}


class PluginBuildError(_PluginBuildError):
    """A plugin's factory failed or returned something merx cannot use; names the plugin.

    The CLI reports it like a config error (exit status 2): the fix is in the experiment's
    settings for that plugin, or in the plugin itself."""

    def __init__(self, plugin: Plugin, key: str, problem: str):
        self.plugin, self.key = plugin, key
        super().__init__(f"{key}: {KINDS[plugin.kind].label} {plugin.name!r} ({plugin.origin_label}) "
                         f"could not be built: {problem}")


def _allowed(name: str) -> bool:
    allow = os.environ.get("MERX_LOAD_PLUGINS")
    if allow is None:
        return True
    return name in {n.strip() for n in allow.split(",") if n.strip()}


def _load_builtins(reg: Registry) -> None:
    from merx.builtin import MODULES

    for modname in MODULES:
        module = importlib.import_module(modname)
        reg.add_module(module, "built-in", modname, None)


def _distribution_name(ep) -> str:
    dist = getattr(ep, "dist", None)
    return (dist.metadata["Name"] if dist is not None else None) or ep.name


def _load_entry_points(reg: Registry) -> None:
    from importlib.metadata import entry_points

    eps = sorted(entry_points(group="merx"), key=lambda ep: (_canonical(_distribution_name(ep)), ep.name))
    for ep in eps:
        if not _allowed(ep.name):
            continue
        dist_name = _distribution_name(ep)
        version = ep.dist.version if getattr(ep, "dist", None) is not None else None
        try:
            module = ep.load()
        except Exception as exc:
            reg.fail("distribution", dist_name, version, f"{type(exc).__name__}: {exc}",
                     f"plugin {ep.name!r} (distribution {dist_name}) failed to import: {type(exc).__name__}: {exc}")
            continue
        reg.add_module(module, "distribution", dist_name, version)


NO_LOCAL_PLUGINS = "MERX_NO_LOCAL_PLUGINS"


def local_plugins_enabled() -> bool:
    """False when ``MERX_NO_LOCAL_PLUGINS`` is 1, true or yes."""
    return os.environ.get(NO_LOCAL_PLUGINS, "").lower() not in {"1", "true", "yes"}


@contextmanager
def local_plugins_switched_off(switch_off: bool = True) -> Iterator[None]:
    """Within the block, no local plugin folder is loaded; afterwards, as before.

    The switch is the environment variable rather than a module flag so that processes merx
    starts meanwhile (data-loader workers, which rebuild augmentations and load plugins on
    their own) inherit it."""
    if not switch_off:
        yield
        return
    before = os.environ.get(NO_LOCAL_PLUGINS)
    os.environ[NO_LOCAL_PLUGINS] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(NO_LOCAL_PLUGINS, None)
        else:
            os.environ[NO_LOCAL_PLUGINS] = before


def local_plugin_dirs(extra: list[str] | None = None) -> list[Path]:
    if not local_plugins_enabled():
        return []
    dirs = [Path.cwd() / "plugins"]
    env_dirs = os.environ.get("MERX_PLUGINS_DIR")
    if env_dirs:
        dirs += [Path(d) for d in env_dirs.split(os.pathsep) if d]
    dirs += [Path(d) for d in (extra or [])]
    seen, out = set(), []
    for d in dirs:
        r = d.resolve()
        if r not in seen and r.is_dir():
            seen.add(r)
            out.append(r)
    return out


def _load_local(reg: Registry, dirs: list[Path]) -> None:
    for folder in dirs:
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_") or not _allowed(path.stem):
                continue
            modname = f"merx_local_plugins.{path.stem}"
            try:
                spec = importlib.util.spec_from_file_location(modname, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[modname] = module
                spec.loader.exec_module(module)
            except Exception as exc:
                sys.modules.pop(modname, None)
                reg.fail("local file", str(path), None, f"{type(exc).__name__}: {exc}",
                         f"local plugin {str(path)!r} failed to import: {type(exc).__name__}: {exc}")
                continue
            reg.add_module(module, "local file", str(path), None)


_registry: Registry | None = None
_extra_dirs: list[str] = []


def set_plugin_dirs(dirs: list[str]) -> None:
    """Add folders of local plugins (``--plugins-dir``); takes effect at the next load."""
    global _registry, _extra_dirs
    _extra_dirs = list(dirs)
    _registry = None


def get_registry(reload: bool = False) -> Registry:
    """The process-wide registry, loaded on first use."""
    global _registry
    local = local_plugins_enabled()
    # A registry loaded before the switch changed would hand out, or lack, local plugins.
    if _registry is None or reload or _registry.local_enabled != local:
        reg = Registry()
        reg.local_enabled = local
        _load_builtins(reg)
        _load_entry_points(reg)
        _load_local(reg, local_plugin_dirs(_extra_dirs))
        reg.collect()
        _registry = reg
    return _registry


def reset() -> None:
    """Forget the loaded plugins (tests, or after changing the working directory)."""
    global _registry
    _registry = None
