"""``edgec.toml``: the models, the targets and the budgets of a CI run, validated before any build.

::

    [[model]]
    name = "digits"                  # default: the file's stem
    path = "models/digits.keras"     # paths relative to the config file
    calib = "data/calib.npz"
    eval = "data/eval.npz"
    # any other `edgec build` option by its long name: fine-tune, prune, qat, epochs, ...

    [[target]]
    profile = "rpi5"                 # name defaults to the profile id
    precision = "int8"               # and any build option for this target only

    [budgets]                        # every model x target
    max_accuracy_drop = 1.0
    [budgets."digits/coral-usb"]     # one row; also "digits/*", "*/coral-usb"
    min_edgetpu_op_share = 1.0

Every error names the file, the line and the key (:class:`ConfigError`, exit code 2). Each row
(model x target) is checked by :func:`edgec.pipeline.plan` like an ``edgec build`` command line,
without importing TensorFlow.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import math
import re
import tomllib
from pathlib import Path
from typing import Any

from edgec.budgets import RENAMED
from edgec.budgets import unknown as unknown_budget
from edgec.ci.gates import BUDGETS, check_budget_value
from edgec.config import BuildOptions
from edgec.errors import EdgecError, choices

DEFAULT_CONFIG = "edgec.toml"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: build options whose values are data paths (relative to the config file unless module:function)
DATA_OPTIONS = ("calib", "eval", "fine_tune")
#: build options a config does not take, and what replaces them
NOT_IN_CONFIG = {
    "out": "the output root is `edgec ci --out DIR`; rows go to OUT/MODEL/TARGET",
    "max_accuracy_drop": "set it in [budgets] (max_accuracy_drop), for every row or one row",
}


class ConfigError(EdgecError):
    """A config that cannot run: names the file, the line and the key (exit code 2)."""


def option_kinds() -> dict[str, str]:
    """Each build option a config takes (by field name) and the kind of value it takes: ``str``,
    ``int``, ``float``, ``bool``, ``strings`` (a list), ``numbers`` (a list or "a,b,c")."""
    kinds: dict[str, str] = {}
    for field in dataclasses.fields(BuildOptions):
        if field.name in NOT_IN_CONFIG:
            continue
        annotation = str(field.type).replace(" ", "")
        if annotation.startswith("tuple[str"):
            kinds[field.name] = "strings"
        elif annotation.startswith("tuple[float") or annotation.startswith("tuple[int"):
            kinds[field.name] = "numbers"
        elif annotation.startswith("bool"):
            kinds[field.name] = "bool"
        elif annotation.startswith("int"):
            kinds[field.name] = "int"
        elif annotation.startswith("float"):
            kinds[field.name] = "float"
        else:
            kinds[field.name] = "str"
    return kinds


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    options: dict[str, Any]
    line: int | None


@dataclasses.dataclass(frozen=True)
class TargetEntry:
    name: str
    profile: str
    options: dict[str, Any]
    line: int | None


@dataclasses.dataclass(frozen=True)
class Row:
    """One model x target: what ``edgec build`` gets and the budgets its artifacts must meet."""

    model: ModelEntry
    target: TargetEntry
    options: dict[str, Any]  # keyword arguments of edgec.pipeline.plan (BuildOptions fields)
    budgets: dict[str, float]
    plan: Any  # edgec.pipeline.BuildPlan
    out_dir: Path

    @property
    def id(self) -> str:
        return f"{self.model.name}/{self.target.name}"

    @property
    def kind(self) -> str:
        return self.plan.profile.target


@dataclasses.dataclass(frozen=True)
class CiConfig:
    path: Path
    sha256: str
    models: list[ModelEntry]
    targets: list[TargetEntry]
    rows: list[Row]

    def select(self, patterns: tuple[str, ...] | list[str]) -> list[Row]:
        """The rows matching any of ``patterns`` (``MODEL/TARGET``, shell wildcards allowed), in
        config order; all rows when there is none.

        Raises:
            EdgecError: a pattern matches no row.
        """
        if not patterns:
            return list(self.rows)
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(row.id, pattern) for row in self.rows):
                raise EdgecError(f"--only {pattern} matches no row of {self.path}; rows: "
                                 f"{', '.join(r.id for r in self.rows)}")
        return [row for row in self.rows if any(fnmatch.fnmatchcase(row.id, p) for p in patterns)]


# ------------------------------------------------------------------------------------------------
# where a key is in the text


_HEADER = re.compile(r"^\s*(\[\[|\[)\s*(.+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")


def _split_dotted(text: str) -> list[str]:
    parts = re.findall(r"""\s*("[^"]*"|'[^']*'|[^.]+)\s*(?:\.|$)""", text)
    return [p.strip().strip("\"'") for p in parts if p.strip()]


class _Lines:
    """The line of each table and key of a TOML text, by path: ``("model", 0, "prune")``,
    ``("budgets", "digits/coral-usb", "min_edgetpu_op_share")``."""

    def __init__(self, text: str):
        self.where: dict[tuple, int] = {}
        counts: dict[tuple, int] = {}
        table: tuple = ()
        for number, line in enumerate(text.splitlines(), start=1):
            header = _HEADER.match(line)
            if header and not _KEY.match(line):
                parts = tuple(_split_dotted(header.group(2)))
                if header.group(1) == "[[":
                    index = counts.get(parts, 0)
                    counts[parts] = index + 1
                    table = (*parts, index)
                else:
                    table = parts
                self.where.setdefault(table, number)
                continue
            key = _KEY.match(line)
            if key:
                self.where.setdefault((*table, *_split_dotted(key.group(1))), number)

    def line(self, *path) -> int | None:
        """The line of ``path``, else of its nearest enclosing table or key that has one."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.where:
                return self.where[path[:end]]
        return None


# ------------------------------------------------------------------------------------------------
# loading


class _Checker:
    def __init__(self, path: Path, text: str):
        self.path = path
        self.lines = _Lines(text)

    def error(self, message: str, *where) -> ConfigError:
        line = self.lines.line(*where) if where else None
        return ConfigError(f"{self.path}:{line}: {message}" if line else f"{self.path}: {message}")


def load_config(path: str | Path = DEFAULT_CONFIG, *, out: str | Path = "dist") -> CiConfig:
    """Read, validate and expand a config into its rows.

    Args:
        path: the config file.
        out: the output root; each row builds into ``OUT/MODEL/TARGET``.

    Raises:
        ConfigError: the file is missing or not TOML, a key is unknown or of the wrong type, a
            name is repeated, a budget names no row, or a row is not a valid build (exit code 2).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file; write an edgec.toml (see 'edgec ci --help') or pass "
                          "its path") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    text = raw.decode("utf-8", "replace")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        where = f"{path}:{match.group(1)}:{match.group(2)}" if match else str(path)
        raise ConfigError(f"{where}: not valid TOML: {reason}") from None
    check = _Checker(path, text)
    for key in data:
        if key not in ("model", "target", "budgets"):
            raise check.error(f"unknown top-level key '{key}'; valid: [[model]], [[target]], [budgets]", key)
    base = path.parent
    models = _entries(check, data, "model", base)
    targets = _entries(check, data, "target", base)
    budgets = _budgets(check, data.get("budgets", {}), models, targets)
    rows = _rows(check, models, targets, budgets, Path(out))
    return CiConfig(path=path, sha256=hashlib.sha256(raw).hexdigest(), models=models, targets=targets, rows=rows)


def _entries(check: _Checker, data: dict, kind: str, base: Path) -> list:
    entries = data.get(kind)
    if entries is None:
        raise check.error(f"no [[{kind}]] entry; add at least one")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise check.error(f"'{kind}' must be an array of tables ([[{kind}]])", kind)
    if not entries:
        raise check.error(f"no [[{kind}]] entry; add at least one", kind)
    kinds = option_kinds()
    required = "path" if kind == "model" else "profile"
    out, names = [], {}
    for index, entry in enumerate(entries):
        label = f"[[{kind}]] #{index + 1}"
        if required not in entry:
            raise check.error(f"{label}: missing required key '{required}'", kind, index)
        options: dict[str, Any] = {}
        for key, value in entry.items():
            if key in ("name", required):
                if not isinstance(value, str) or not value:
                    raise check.error(f"{label}: key '{key}' must be a non-empty string, got {value!r}", kind, index, key)
                continue
            field = key.replace("-", "_")
            if field in NOT_IN_CONFIG:
                raise check.error(f"{label}: key '{key}' is not a config key: {NOT_IN_CONFIG[field]}", kind, index, key)
            if field not in kinds:
                valid = ["name", required, *(k.replace("_", "-") for k in kinds)]
                raise check.error(f"{label}: unknown key '{key}'; valid keys: {', '.join(valid)}", kind, index, key)
            if field in options:
                raise check.error(f"{label}: '{key}' is given twice (as '{field}' and '{field.replace('_', '-')}')",
                                  kind, index, key)
            options[field] = _option_value(check, label, key, value, kinds[field], (kind, index, key))
        for field in DATA_OPTIONS:
            if isinstance(options.get(field), str):
                options[field] = _relative(base, options[field])
        if options.get("custom_objects"):  # .py files beside the config; module names as they are
            options["custom_objects"] = type(options["custom_objects"])(
                str(base / s) if str(s).endswith(".py") else s for s in options["custom_objects"])
        if kind == "model":
            model_path = base / entry["path"]
            name = entry.get("name") or model_path.stem
            item = ModelEntry(name, model_path, options, check.lines.line(kind, index))
        else:
            profile = entry["profile"]
            if profile.endswith(".toml"):
                profile = str(base / profile)
            name = entry.get("name") or Path(profile).stem
            item = TargetEntry(name, profile, options, check.lines.line(kind, index))
        if not NAME.match(name):
            raise check.error(f"{label}: name '{name}' must start with a letter or digit and hold only letters, "
                              "digits, '.', '_' and '-' (it names the row and its directory)", kind, index, "name")
        if name in names:
            hint = " (give each a distinct name = ...)" if kind == "target" else ""
            raise check.error(f"{label}: {kind} name '{name}' is already used by [[{kind}]] #{names[name] + 1}{hint}",
                              kind, index, "name" if "name" in entry else required)
        names[name] = index
        out.append(item)
    return out


def _relative(base: Path, spec: str) -> str:
    """A data spec relative to the config's folder (``module:function`` is left as it is;
    ``file.py:function`` gets its file resolved)."""
    if ":" in spec and not (base / spec).exists():
        file, _, func = spec.rpartition(":")
        if file.endswith(".py"):
            return f"{base / file}:{func}"
        return spec
    return str(base / spec)


def _option_value(check: _Checker, label: str, key: str, value: Any, kind: str, where: tuple) -> Any:
    def bad(expected: str) -> ConfigError:
        return check.error(f"{label}: key '{key}' must be {expected}, got {type(value).__name__} {value!r}", *where)

    if kind == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad("a finite number")
        value = float(value)
    elif kind == "strings":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        value = tuple(value)
    elif kind == "numbers":
        if isinstance(value, str):
            return value  # "0.485,0.456,0.406", parsed by the build
        if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise bad("a list of numbers")
        value = ",".join(repr(float(v)) for v in value)
    elif not isinstance(value, str):
        raise bad("a string")
    return value


def _selector_rows(selector: str, models: list[ModelEntry], targets: list[TargetEntry]) -> tuple[str, str] | None:
    model, sep, target = selector.partition("/")
    target = target if sep else "*"
    if model != "*" and model not in {m.name for m in models}:
        return None
    if target != "*" and target not in {t.name for t in targets}:
        return None
    return model, target


def _budgets(check: _Checker, table: Any, models: list[ModelEntry],
             targets: list[TargetEntry]) -> list[tuple[int, str, str, dict[str, float], tuple]]:
    """The budget tables as (precedence, model or *, target or *, budgets, where), most general first."""
    if not isinstance(table, dict):
        raise check.error("'budgets' must be a table ([budgets])", "budgets")
    scopes: list[tuple[int, str, str, dict[str, float], tuple]] = []
    general: dict[str, float] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            scope = _selector_rows(key, models, targets)
            if scope is None:
                rows = ", ".join(f"{m.name}/{t.name}" for m in models for t in targets)
                raise check.error(f"[budgets.\"{key}\"] names no row; expected MODEL/TARGET, MODEL/*, */TARGET or MODEL "
                                  f"with the names of [[model]] and [[target]] entries; rows: {rows}", "budgets", key)
            specific = _budget_table(check, value, ("budgets", key))
            precedence = (scope[0] != "*") * 2 + (scope[1] != "*")
            scopes.append((precedence, *scope, specific, ("budgets", key)))
        else:
            general.update(_budget_table(check, {key: value}, ("budgets",)))
    scopes.append((0, "*", "*", general, ("budgets",)))
    return sorted(scopes, key=lambda s: s[0])


def _budget_table(check: _Checker, table: dict, where: tuple) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in table.items():
        if name in RENAMED:  # an earlier spelling: the line names today's budgets
            raise check.error(unknown_budget(name, "ci"), *where, name)
        if name not in BUDGETS:
            raise check.error(f"unknown budget '{name}'; valid: {choices(BUDGETS)} (a table [budgets.\"MODEL/TARGET\"] "
                              "holds the budgets of one row)", *where, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise check.error(f"budget '{name}' must be a finite number, got {type(value).__name__} {value!r}", *where, name)
        problem = check_budget_value(name, value)
        if problem:
            raise check.error(f"budget '{name}' = {value!r}: {problem}", *where, name)
        out[name] = float(value) if isinstance(value, float) else value
    return out


def _rows(check: _Checker, models: list[ModelEntry], targets: list[TargetEntry], scopes, out: Path) -> list[Row]:
    from edgec.pipeline import plan

    rows = []
    for model in models:
        for target in targets:
            options = {**model.options, **target.options}
            row_dir = out / model.name / target.name
            options["out"] = out / model.name
            try:
                request = plan(model.path, target.profile, **options)
            except EdgecError as exc:
                raise _row_error(check, model, target, models, targets, str(exc)) from None
            budgets: dict[str, float] = {}
            origin: dict[str, tuple] = {}
            for _, m, t, table, where in scopes:
                if m in ("*", model.name) and t in ("*", target.name):
                    for name, limit in table.items():
                        budgets[name] = limit
                        origin[name] = (*where, name)
            for name in list(budgets):
                spec = BUDGETS[name]
                if spec.kinds and request.profile.target not in spec.kinds:
                    if len(origin[name]) == 3 and origin[name][1].partition("/")[2] not in ("", "*"):
                        raise check.error(f"budget '{name}' applies to {'/'.join(spec.kinds)} targets; "
                                          f"{model.name}/{target.name} is a {request.profile.target} target",
                                          *origin[name])
                    del budgets[name]  # a general budget that does not apply to this kind of target
                    continue
                if spec.needs_eval and not request.options.eval:
                    raise check.error(f"budget '{name}' of row {model.name}/{target.name} needs labelled eval data: "
                                      f"add eval = \"DATA\" to [[model]] '{model.name}' (or set the budget for the "
                                      "rows that have it)", *origin[name])
            rows.append(Row(model, target, options, budgets, request, row_dir))
    return rows


def _row_error(check: _Checker, model: ModelEntry, target: TargetEntry, models, targets, message: str) -> ConfigError:
    """A build error of one row, at the line of the key it names when either entry sets it."""
    where: tuple = ("target", targets.index(target))
    for flag in re.findall(r"--([a-z][a-z0-9-]*)", message):
        field = flag.replace("-", "_")
        for kind, entry, entries in (("target", target, targets), ("model", model, models)):
            if field in entry.options:
                raw = flag if (kind, entries.index(entry), flag) in check.lines.where else field
                where = (kind, entries.index(entry), raw)
                break
        else:
            continue
        break
    if where[0] == "target" and len(where) == 2 and str(model.path) in message:
        where = ("model", models.index(model), "path")
    return check.error(f"row {model.name}/{target.name}: {message}", *where)
