"""Load recipe and site YAML files into the frozen dataclasses of :mod:`apc.recipe.schema`.

Every problem is collected (not just the first) and reported as a
:class:`~apc.recipe.errors.Problem` naming file, 1-based line and field path;
bad input never produces a traceback, only :class:`~apc.recipe.errors.RecipeError`.

Conversion is driven by the dataclass type hints (see :class:`Converter`).
After conversion, :func:`_cross_check` checks what involves several sections:
limits vs MVs, permissive syntax and names, tag uniqueness, controller sections.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import hashlib
import math
import sys
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from apc.recipe.errors import Problem, RecipeError
from apc.recipe.group_schema import group_problems
from apc.recipe.overrides import Override, apply_overrides, attribute_problems, override_suffix
from apc.recipe.permissive import PermissiveSyntaxError, parse_permissive
from apc.recipe.schema import IoSection, Recipe, Site
from apc.types import MvKind

if typing.TYPE_CHECKING:
    from apc.kinds import UnitKind

__all__ = [
    "Converter",
    "FileCheck",
    "LoadedRecipe",
    "LoadedSite",
    "SignalNamesProvider",
    "check_files",
    "check_main",
    "convert",
    "load_recipe",
    "load_site",
    "signal_names_for",
]

T = TypeVar("T")

SignalNamesProvider = Callable[[Recipe], Iterable[str]]
FileCheck = Callable[[Recipe, Path], Iterable[tuple[str, str]]]
"""``check(recipe, recipe_dir)``: (field path, message) for each file the recipe names that cannot be
used (e.g. an ONNX model with other tensor names); reported at that field's line."""
"""Returns further signal names a recipe provides (model states, estimator extras)."""

_NULL_TAG = "tag:yaml.org,2002:null"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_STR_TAG = "tag:yaml.org,2002:str"


class _Invalid:
    """Marker for a value that failed conversion (its problem is already recorded)."""


_BAD: Any = _Invalid()


@dataclass(frozen=True)
class LoadedRecipe:
    """A recipe with the file it came from and the SHA-256 of its bytes (and, with overrides, of
    their text too); ``overrides``: the ``PATH=VALUE`` applied over the file, if any."""

    recipe: Recipe
    path: Path
    sha256: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoadedSite:
    """A site file and the recipes of its units, keyed by unit name."""

    site: Site
    path: Path
    sha256: str
    recipes: dict[str, LoadedRecipe]


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _scalar_value(node: ScalarNode) -> Any:
    return yaml.SafeLoader("").construct_object(node, deep=True)


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, ScalarNode) and node.tag == _NULL_TAG:
        return "nothing (null)"
    return repr(node.value)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + " or null"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of ({_type_name(args[0])})"
        return f"a list of {len(args)} items"
    if origin is dict:
        return f"a mapping of names to ({_type_name(args[1])})"
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    return str(tp)


class Converter:
    """Converts YAML nodes to typed values, recording problems instead of raising.

    Supported types: ``int``, ``float`` (ints accepted; bools and non-finite
    values refused), ``str``, ``bool``, ``Literal[...]``, ``enum.Enum``
    subclasses (by value), ``X | None``, ``tuple[X, Y]``, ``tuple[X, ...]``,
    ``dict[str, X]`` and dataclasses (unknown keys and missing required fields
    are problems; ``__post_init__`` ``ValueError`` becomes a problem).
    Strings and keys are taken verbatim from the YAML text, so YAML 1.1
    spellings such as ``ON`` or ``no`` stay strings where a string is expected.
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self._key_lines: dict[int, int] = {}

    def line(self, node: Node) -> int:
        """Line of the key that holds ``node`` if known, else of ``node`` itself."""
        return self._key_lines.get(id(node), _line(node))

    def problem(self, line: int | None, path: str, message: str) -> None:
        """Record one problem."""
        self.problems.append(Problem(self.file, line, path, message))

    def convert(self, tp: Any, node: Node, path: str) -> Any:
        """Value of type ``tp`` from ``node``, or an invalid marker after recording a problem."""
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            return self._union(tp, node, path)
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            return self._dataclass(tp, node, path)
        if origin is tuple:
            return self._tuple(tp, node, path)
        if origin is dict:
            return self._dict(tp, node, path)
        if not isinstance(node, ScalarNode) or node.tag == _NULL_TAG:
            return self._wrong(tp, node, path)
        return self._scalar(tp, node, path)

    def _wrong(self, tp: Any, node: Node, path: str) -> Any:
        self.problem(_line(node), path, f"expected {_type_name(tp)}, got {_describe(node)}")
        return _BAD

    def _scalar(self, tp: Any, node: ScalarNode, path: str) -> Any:
        text: str = node.value
        if tp is str:
            return text
        if typing.get_origin(tp) is typing.Literal:
            for option in typing.get_args(tp):
                if option == text or (not isinstance(option, str) and option == _scalar_value(node)):
                    return option
            return self._wrong(tp, node, path)
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            for member in tp:
                if str(member.value) == text:
                    return member
            return self._wrong(tp, node, path)
        if tp is bool:
            return _scalar_value(node) if node.tag == _BOOL_TAG else self._wrong(tp, node, path)
        if tp is int:
            return _scalar_value(node) if node.tag == _INT_TAG else self._wrong(tp, node, path)
        if tp is float:
            value: float | None = None
            if node.tag in (_INT_TAG, _FLOAT_TAG):
                value = float(_scalar_value(node))
            elif node.tag == _STR_TAG and node.style is None:
                try:  # YAML 1.1 reads "1e3" as a string
                    value = float(text)
                except ValueError:
                    value = None
            if value is None:
                return self._wrong(tp, node, path)
            if not math.isfinite(value):
                self.problem(_line(node), path, f"expected a finite number, got {text!r}")
                return _BAD
            return value
        raise TypeError(f"unsupported type in schema: {tp!r}")

    def _union(self, tp: Any, node: Node, path: str) -> Any:
        arms = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(arms) != 1:
            raise TypeError(f"unsupported union in schema: {tp!r}")
        if isinstance(node, ScalarNode) and node.tag == _NULL_TAG:
            return None
        return self.convert(arms[0], node, path)

    def _tuple(self, tp: Any, node: Node, path: str) -> Any:
        if not isinstance(node, SequenceNode):
            return self._wrong(tp, node, path)
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            item_types = [args[0]] * len(node.value)
        elif len(node.value) != len(args):
            self.problem(_line(node), path, f"expected a list of {len(args)} items, got {len(node.value)}")
            return _BAD
        else:
            item_types = list(args)
        items = [self.convert(t, n, f"{path}[{i}]") for i, (t, n) in enumerate(zip(item_types, node.value))]
        return _BAD if any(i is _BAD for i in items) else tuple(items)

    def pairs(self, node: Node, path: str) -> list[tuple[str, Node, Node]]:
        """(key, key node, value node) of a mapping; duplicates and non-string keys are problems."""
        assert isinstance(node, MappingNode)
        seen: dict[str, int] = {}
        out: list[tuple[str, Node, Node]] = []
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.problem(_line(key_node), path, "keys must be plain names")
                continue
            key = str(key_node.value)
            if key in seen:
                self.problem(_line(key_node), _join(path, key), f"duplicate key (first given at line {seen[key]})")
                continue
            seen[key] = _line(key_node)
            self._key_lines[id(value_node)] = seen[key]
            out.append((key, key_node, value_node))
        return out

    def _dict(self, tp: Any, node: Node, path: str) -> Any:
        if not isinstance(node, MappingNode):
            return self._wrong(tp, node, path)
        value_type = typing.get_args(tp)[1]
        out = {key: self.convert(value_type, v, _join(path, key)) for key, _, v in self.pairs(node, path)}
        return _BAD if any(v is _BAD for v in out.values()) else out

    def fields(self, cls: type[Any], node: Node, path: str) -> dict[str, Any] | None:
        """Converted field values of dataclass ``cls`` present in ``node`` (valid ones only).

        Returns ``None`` when ``node`` is not a mapping. Unknown keys and missing
        required fields are recorded; the result lacks invalid and missing fields.
        """
        if not isinstance(node, MappingNode):
            self._wrong(cls, node, path)
            return None
        hints = typing.get_type_hints(cls)
        spec = {f.name: f for f in dataclasses.fields(cls) if f.init}
        out: dict[str, Any] = {}
        for key, key_node, value_node in self.pairs(node, path):
            if key not in spec:
                self.problem(_line(key_node), _join(path, key), "unknown key" + _suggest(key, spec))
                continue
            value = self.convert(hints[key], value_node, _join(path, key))
            if value is not _BAD:
                out[key] = value
        given = {key for key, _, _ in self.pairs_quiet(node)}
        for name, f in spec.items():
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required and name not in given:
                self.problem(self.line(node), _join(path, name), "required field is missing")
        return out

    @staticmethod
    def pairs_quiet(node: MappingNode) -> list[tuple[str, Node, Node]]:
        """Scalar-keyed pairs of a mapping without recording problems."""
        return [(str(k.value), k, v) for k, v in node.value if isinstance(k, ScalarNode)]

    def build(self, cls: type[T], node: Node, path: str, values: dict[str, Any]) -> T | None:
        """``cls(**values)``; a ``__post_init__`` ``ValueError`` is recorded.

        The problem is attributed to a field when the message starts with a
        field name (``operator limits ... lie outside ...``), else to the mapping.
        """
        try:
            return cls(**values)
        except ValueError as exc:
            message = str(exc)
            first = message.split(" ", 1)[0]
            line, where = self.line(node), path
            if isinstance(node, MappingNode) and first in values:
                where = _join(path, first)
                for key, _, value_node in self.pairs_quiet(node):
                    if key == first:
                        line = _line(value_node)
            self.problem(line, where, message)
            return None

    def _dataclass(self, cls: type[Any], node: Node, path: str) -> Any:
        n_before = len(self.problems)
        values = self.fields(cls, node, path)
        if values is None or len(self.problems) != n_before:
            return _BAD
        built = self.build(cls, node, path, values)
        return _BAD if built is None else built


def convert(cls: type[T], node: Node, path: str = "", *, file: str = "<input>") -> T:
    """Convert one YAML node to ``cls``; raises :class:`RecipeError` listing every problem."""
    conv = Converter(file)
    value = conv.convert(cls, node, path)
    if conv.problems or value is _BAD:
        raise RecipeError(conv.problems)
    return typing.cast(T, value)


# ---------------------------------------------------------------- signal names


def signal_names_for(recipe: Recipe, provider: SignalNamesProvider | None = None) -> frozenset[str]:
    """Names a permissive may use: input names ∪ MV names ∪ ``provider(recipe)``.

    ``provider`` adds what the model and estimator make available (states,
    extras such as pseudo-resistance); model parameters are not signals.
    """
    names = set(recipe.io.inputs) | set(recipe.io.mvs)
    if provider is not None:
        names |= set(provider(recipe))
    return frozenset(names)


# ---------------------------------------------------------------- files


def _compose(path: Path, problems: list[Problem]) -> tuple[bytes, Node | None]:
    """File bytes and YAML node tree; problems recorded on failure (tree ``None``)."""
    file = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        problems.append(Problem(file, None, "", f"cannot read file: {exc.strerror or exc}"))
        return b"", None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(Problem(file, None, "", f"file is not UTF-8 text (byte {exc.start})"))
        return data, None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else int(mark.line) + 1
        detail = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem and exc.context_mark is not None:
            detail += f" ({exc.context}, started at line {int(exc.context_mark.line) + 1})"
        problems.append(Problem(file, line, "", f"YAML syntax error: {detail}"))
        return data, None
    except yaml.YAMLError as exc:
        problems.append(Problem(file, None, "", f"YAML error: {exc}"))
        return data, None
    if root is None:
        problems.append(Problem(file, 1, "", "file is empty"))
        return data, None
    if not isinstance(root, MappingNode):
        problems.append(Problem(file, _line(root), "", f"expected a mapping at top level, got {_describe(root)}"))
        return data, None
    return data, root


def _child(node: Node | None, key: str) -> tuple[Node | None, Node | None]:
    """(key node, value node) of ``key`` in a mapping node, else ``(None, None)``."""
    if isinstance(node, MappingNode):
        for k, v in node.value:
            if isinstance(k, ScalarNode) and k.value == key:
                return k, v
    return None, None


def _at(root: Node, *keys: str | int, key_line: bool = False) -> int:
    """Line of the deepest node found along ``keys``.

    Collections and (with ``key_line``) the last key are located by their key's line.
    """
    node: Node | None = root
    line = _line(root)
    for key in keys:
        if isinstance(key, int):
            nxt = node.value[key] if isinstance(node, SequenceNode) and key < len(node.value) else None
            knode = None
        else:
            knode, nxt = _child(node, key)
        if nxt is None:
            return line
        use_key = key_line or isinstance(nxt, (MappingNode, SequenceNode))
        line = _line(knode) if (use_key and knode is not None) else _line(nxt)
        node = nxt
    return line


def _cross_check(
    conv: Converter,
    root: Node,
    parts: dict[str, Any],
    recipe: Recipe | None,
    extra_names: frozenset[str],
    provider: SignalNamesProvider | None,
    files: FileCheck | None = None,
    kind: UnitKind | None = None,
) -> None:
    """Checks across sections, run on whichever sections converted cleanly."""
    add = conv.problem
    io: IoSection | None = parts.get("io")
    limits = parts.get("limits")
    permissives = parts.get("permissives", {})

    if io is not None and limits is not None:
        for name in limits:
            if name not in io.mvs:
                add(_at(root, "limits", name, key_line=True), f"limits.{name}",
                    "no MV of this name in io.mvs" + _suggest(name, io.mvs))
        for name in io.mvs:
            if name not in limits:
                add(_at(root, "limits"), f"limits.{name}", f"MV '{name}' has no limits")

    if io is not None:
        for name, p in permissives.items():
            for i, mv in enumerate(p.applies_to):
                if mv not in io.mvs:
                    add(_at(root, "permissives", name, "applies_to", i), f"permissives.{name}.applies_to[{i}]",
                        f"no MV named '{mv}' in io.mvs" + _suggest(mv, io.mvs))
        _check_tags(conv, root, io)

    known: frozenset[str] | None = None
    if recipe is not None:
        try:
            known = signal_names_for(recipe, provider) | extra_names
        except Exception as exc:  # provider failed on user input (e.g. unknown model)
            add(_at(root, "model", "name"), "model.name", f"cannot list the model's signal names: {exc}")
    elif io is not None and provider is None:
        known = frozenset(io.inputs) | frozenset(io.mvs) | extra_names
    for name, p in permissives.items():
        line = _at(root, "permissives", name, "expr")
        try:
            expr = parse_permissive(p.expr)
        except PermissiveSyntaxError as exc:
            add(line, f"permissives.{name}.expr", f"syntax error at {exc}")
            continue
        if known is not None:
            for unknown in sorted(expr.names - known):
                add(line, f"permissives.{name}.expr", f"unknown signal '{unknown}'" + _suggest(unknown, known))

    _check_files(conv, root, parts, recipe, files)
    if kind is not None:
        kind.cross_check(_Checks(conv, root, parts, known))


def _check_files(conv: Converter, root: Node, parts: dict[str, Any], recipe: Recipe | None,
                 files: FileCheck | None) -> None:
    """Every file the recipe names exists (relative to the recipe file) and, with ``files``, is usable."""
    base = Path(conv.file).parent
    if recipe is None or files is None:
        return
    try:
        found = list(files(recipe, base))
    except Exception as exc:  # a checker bug is reported, never a traceback
        found = [("", f"cannot check the files the recipe names: {type(exc).__name__}: {exc}")]
    for field_path, message in found:
        keys = [k for k in field_path.split(".") if k]
        conv.problem(_at(root, *keys) if keys else 1, field_path, message)


class _Checks:
    """A unit kind's view of the recipe being loaded (:class:`apc.kinds.RecipeChecks`)."""

    def __init__(self, conv: Converter, root: Node, parts: dict[str, Any], known: frozenset[str] | None) -> None:
        self._conv, self._root, self.parts, self.known = conv, root, parts, known
        self.recipe_dir = Path(conv.file).parent

    def problem(self, keys: tuple[str | int, ...], field: str, message: str, key_line: bool = False) -> None:
        """Report ``message`` for ``field`` at the line of ``keys``."""
        self._conv.problem(_at(self._root, *keys, key_line=key_line), field, message)

    def has_section(self, key: str) -> bool:
        """True when the file has the top-level key ``key``."""
        return _child(self._root, key)[1] is not None

    def unknown_signal(self, keys: tuple[str | int, ...], field: str, name: str, key_line: bool = False) -> None:
        """Report that ``name`` is no signal the recipe provides (with the closest one)."""
        self.problem(keys, field, f"unknown signal '{name}'" + _suggest(name, self.known or ()), key_line)


def _check_tags(conv: Converter, root: Node, io: IoSection) -> None:
    """Written tags are unique and never read as inputs; MV names and model inputs are unique."""
    reads = {spec.tag: f"io.inputs.{name}.tag" for name, spec in io.inputs.items()}
    reads.setdefault(io.heartbeat.dcs_tag, "io.heartbeat.dcs_tag")
    writes: dict[str, str] = {io.heartbeat.apc_tag: "io.heartbeat.apc_tag"}
    model_inputs: dict[str, str] = {}
    for name, mv in io.mvs.items():
        base = f"io.mvs.{name}"
        if name in io.inputs:
            conv.problem(_at(root, "io", "mvs", name, key_line=True), base, "an input has the same name")
        if mv.sequence_tag is not None and mv.kind is MvKind.SETPOINT:
            conv.problem(_at(root, "io", "mvs", name, "sequence_tag"), f"{base}.sequence_tag",
                         "only increment and pulse MVs have a sequence tag")
        if mv.sequence_tag is None and mv.kind is not MvKind.SETPOINT:
            conv.problem(_at(root, "io", "mvs", name, key_line=True), f"{base}.sequence_tag",
                         f"required for an {mv.kind.value} MV: the DCS applies each move once per new sequence "
                         "number, so a re-sent or repeated write can never move it twice")
        if mv.model_input in model_inputs:
            conv.problem(_at(root, "io", "mvs", name, "model_input"), f"{base}.model_input",
                         f"model input '{mv.model_input}' is already driven by {model_inputs[mv.model_input]}")
        model_inputs.setdefault(mv.model_input, base)
        for field_name in ("tag", "sequence_tag", "active_flag"):
            tag = getattr(mv, field_name)
            if tag is None:
                continue
            where = f"{base}.{field_name}"
            line = _at(root, "io", "mvs", name, field_name)
            if tag in writes:
                conv.problem(line, where, f"tag '{tag}' is also written by {writes[tag]}")
            elif tag in reads:
                conv.problem(line, where, f"tag '{tag}' is written here but read as {reads[tag]}")
            writes.setdefault(tag, where)
    if io.heartbeat.apc_tag in reads:
        conv.problem(_at(root, "io", "heartbeat", "apc_tag"), "io.heartbeat.apc_tag",
                     f"tag '{io.heartbeat.apc_tag}' is written here but read as {reads[io.heartbeat.apc_tag]}")
    # What the DCS reports back must come from the DCS: a readback or status bound to a tag the APC
    # writes would confirm the APC's own writes.
    for name, mv in io.mvs.items():
        for field_name in ("readback", "remote_status", "high_limit_status", "low_limit_status"):
            tag = getattr(mv, field_name)
            if tag is not None and tag in writes:
                conv.problem(_at(root, "io", "mvs", name, field_name), f"io.mvs.{name}.{field_name}",
                             f"tag '{tag}' is written by {writes[tag]}: the DCS must report it")
    if io.heartbeat.dcs_tag in writes:
        conv.problem(_at(root, "io", "heartbeat", "dcs_tag"), "io.heartbeat.dcs_tag",
                     f"tag '{io.heartbeat.dcs_tag}' is written by {writes[io.heartbeat.dcs_tag]}")


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.file, p.line or 0))


def _kind_of(conv: Converter, root: Node) -> UnitKind | None:
    """The unit kind the recipe names (None, with a problem at ``unit_kind``, when it names none or an
    unregistered one: the generic sections are still checked)."""
    from apc.kinds import UnknownKindError, get_kind, kind_names

    _, node = _child(root, "unit_kind")
    if node is None:
        return None  # reported as a missing required field
    if not isinstance(node, ScalarNode) or node.tag == _NULL_TAG:
        return None  # reported by the conversion (expected a string)
    try:
        return get_kind(str(node.value))
    except UnknownKindError:
        names = kind_names()
        conv.problem(_line(node), "unit_kind", f"unknown unit kind {node.value!r}; known: {list(names)}"
                     + _suggest(str(node.value), names))
        return None


def _recipe_from(
    path: Path,
    problems: list[Problem],
    extra_names: frozenset[str],
    provider: SignalNamesProvider | None,
    composed: tuple[bytes, Node | None] | None = None,
    files: FileCheck | None = None,
) -> LoadedRecipe | None:
    """Load one recipe, appending its problems; ``None`` when it has any."""
    file_problems: list[Problem] = []
    data, root = composed if composed is not None else _compose(path, file_problems)
    if root is None:
        problems.extend(file_problems)
        return None
    conv = Converter(str(path))
    kind = _kind_of(conv, root)
    cls = kind.recipe_class if kind is not None else Recipe
    parts = conv.fields(cls, root, "") or {}
    recipe = None if conv.problems else conv.build(cls, root, "", parts)
    _cross_check(conv, root, parts, recipe, extra_names, provider, files, kind)
    problems.extend(_sorted(file_problems + conv.problems))
    if recipe is None or conv.problems:
        return None
    return LoadedRecipe(recipe, path, hashlib.sha256(data).hexdigest())


def _site_from(
    path: Path,
    problems: list[Problem],
    extra_names: frozenset[str],
    provider: SignalNamesProvider | None,
    composed: tuple[bytes, Node | None] | None = None,
    files: FileCheck | None = None,
) -> LoadedSite | None:
    """Load one site and its recipes, appending all problems; ``None`` when there are any."""
    data, root = composed if composed is not None else _compose(path, problems)
    if root is None:
        return None
    conv = Converter(str(path))
    site = conv.convert(Site, root, "")
    problems.extend(_sorted(conv.problems))
    if site is _BAD:
        return None
    assert isinstance(site, Site)
    recipes: dict[str, LoadedRecipe] = {}
    cache: dict[Path, LoadedRecipe | None] = {}
    n_before = len(problems)
    for i, unit in enumerate(site.units):
        recipe_path = path.parent / unit.recipe
        if not recipe_path.is_file():
            problems.append(Problem(str(path), _at(root, "units", i, "recipe"), f"units[{i}].recipe",
                                    f"recipe file not found: {recipe_path}"))
            continue
        key = recipe_path.resolve()
        if key not in cache:
            cache[key] = _recipe_from(recipe_path, problems, extra_names, provider, files=files)
        loaded = cache[key]
        if loaded is not None:
            recipes[unit.name] = loaded
    for gp in group_problems(site.groups, tuple(u.name for u in site.units),
                             {n: r.recipe for n, r in recipes.items()}):
        problems.append(Problem(str(path), _at(root, *gp.keys), gp.field, gp.message))
    if len(problems) != n_before:
        return None
    return LoadedSite(site, path, hashlib.sha256(data).hexdigest(), recipes)


def load_recipe(
    path: str | Path,
    extra_names: frozenset[str] = frozenset(),
    provider: SignalNamesProvider | None = None,
    files: FileCheck | None = None,
    overrides: Sequence[Override] = (),
) -> LoadedRecipe:
    """Load and check one recipe file; raises :class:`RecipeError` listing every problem.

    Permissive names are checked against ``signal_names_for(recipe, provider) | extra_names``.
    ``overrides`` replace fields of the composed file before any check (:mod:`apc.recipe.overrides`);
    their problems name the override instead of a line.
    """
    problems: list[Problem] = []
    if not overrides:
        loaded = _recipe_from(Path(path), problems, extra_names, provider, files=files)
        if loaded is None:
            raise RecipeError(problems)
        return loaded
    data, root = _compose(Path(path), problems)
    if root is not None:
        problems.extend(apply_overrides(typing.cast(MappingNode, root), overrides))
    if root is None or problems:
        raise RecipeError(problems)
    loaded = _recipe_from(Path(path), problems, extra_names, provider, (data + override_suffix(overrides), root),
                          files)
    if loaded is None:
        raise RecipeError(attribute_problems(problems, overrides))
    return dataclasses.replace(loaded, overrides=tuple(f"{ov.path}={ov.value_text}" for ov in overrides))


def load_site(
    path: str | Path,
    extra_names: frozenset[str] = frozenset(),
    provider: SignalNamesProvider | None = None,
    files: FileCheck | None = None,
) -> LoadedSite:
    """Load a site file and every recipe it references (paths relative to the site file).

    Raises :class:`RecipeError` listing the problems of the site and of its recipes.
    """
    problems: list[Problem] = []
    loaded = _site_from(Path(path), problems, extra_names, provider, files=files)
    if loaded is None:
        raise RecipeError(problems)
    return loaded


def check_files(
    paths: Sequence[str | Path],
    extra_names: frozenset[str] = frozenset(),
    provider: SignalNamesProvider | None = None,
    files: FileCheck | None = None,
) -> list[Problem]:
    """Problems of each file (a site if its top level has ``units``, else a recipe); empty = fine."""
    problems: list[Problem] = []
    for p in paths:
        path = Path(p)
        composed = _compose(path, problems)
        root = composed[1]
        if root is None:
            continue
        if _child(root, "units")[1] is not None:
            _site_from(path, problems, extra_names, provider, composed, files)
        else:
            _recipe_from(path, problems, extra_names, provider, composed, files)
    return problems


def check_main(paths: list[str], provider: SignalNamesProvider | None = None, files: FileCheck | None = None) -> int:
    """``apc check FILE...``: print problems to stderr; exit code 0 when all files are fine."""
    if not paths:
        print("usage: apc check FILE...", file=sys.stderr)
        return 2
    bad = False
    for p in paths:
        problems = check_files([p], provider=provider, files=files)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            bad = True
        else:
            print(f"{p}: ok")
    return 1 if bad else 0
