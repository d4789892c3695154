"""Pipeline recipes: a YAML file naming models, data, variants (chains of passes) and targets.

Everything is checked before anything runs: an unknown pass or key, a bad parameter, a missing
file or a chain whose formats do not connect ends in one ``UsageError`` line that says where in
the recipe it is. Passes are looked up in ``PASSES`` only, so a pass another module registers is
usable in recipes without this module knowing it.

```yaml
name: quick
output: results/quick            # store + cache directory, relative to this file
data:                             # default for every model (a model may override it)
  train: digits                   # specs as `load_images` takes them
  calibration: {spec: digits, samples: 100}
  eval: digits
models:
  - {name: mnv2, zoo: mobilenet_v2, params: {input_size: 32, alpha: 0.35, classes: 10}, train: {epochs: 3}}
  - {name: mine, file: models/mine.h5}
variants:
  - {name: int8, passes: ["quantize(mode=int8)"], formats: [tflite, onnx]}
  - {name: pruned, passes: [{prune: {sparsity: 0.5}}, {quantize: {mode: int8}}]}
targets: {runtimes: [litert, onnxruntime], threads: [1, 2], devices: [cpu, gpu]}
bench: {runs: 30, warmup: 3, memory: true}
```
"""

from __future__ import annotations

import inspect
import os
import re
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from edgecompress.artifacts import ModelFormat, detect_format
from edgecompress.calibration.data import EMBEDDED_DATA
from edgecompress.compress.passes import PASSES
from edgecompress.errors import EdgeCompressError, UsageError
from edgecompress.models.inputs import DataPlan, DataSource, Role

#: recipe data keys → the data roles passes declare (``eval`` is the held-out validation role)
DATA_KEYS = {"train": Role.TRAIN, "calibration": Role.CALIBRATION, "eval": Role.VALIDATION}
_CALL = re.compile(r"^\s*([A-Za-z_][\w-]*)\s*(?:\((.*)\))?\s*$", re.S)


@dataclass(frozen=True)
class TrainingDefaults:
    """``training:`` in a recipe: budgets for every fine-tuning pass whose own parameters leave them
    open (a pass's own ``epochs=`` wins)."""

    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None

    def for_pass(self, accepted: list[str], given: dict[str, Any]) -> dict[str, Any]:
        """The defaults this pass takes and was not given."""
        values = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr}
        return {k: v for k, v in values.items() if v is not None and k in accepted and k not in given}


@dataclass(frozen=True)
class TrainSpec:
    """Training a zoo model before it is compressed, so its metric means something."""

    epochs: int = 3
    lr: float = 2e-3
    batch_size: int = 32
    val_split: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or not 0 < self.val_split < 1:
            raise UsageError(
                f"bad training settings {self.to_dict()}", "epochs ≥ 1, batch_size ≥ 1, lr > 0, 0 < val_split < 1"
            )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    zoo: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    file: Path | None = None
    #: None means: use the zoo model's random weights (sizes and latency only, no metric)
    train: TrainSpec | None = None
    data: DataPlan = field(default_factory=DataPlan)
    task: str | None = None
    #: time the outputs at this square input size (same files, input resized in the interpreter);
    #: the metric stays at the trained size. For tables that quote published sizes (224, 299 px).
    latency_at: int | None = None

    @property
    def measures_metric(self) -> bool:
        return self.data.validation is not None and (self.file is not None or self.train is not None)


@dataclass(frozen=True)
class PassSpec:
    """A pass as the recipe names it, with the recipe's training defaults already filled in."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def build(self):
        """A fresh pass instance (passes may hold state, so every stage gets its own)."""
        from edgecompress.compress.passes import PASSES

        return PASSES.get(self.name)(**self.params)

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.name}({args})" if args else self.name


@dataclass(frozen=True)
class VariantSpec:
    name: str
    passes: tuple[PassSpec, ...]
    #: the output format this expansion of a multi-format variant produces (None: as the chain says)
    format: str | None = None

    @property
    def key(self) -> str:
        return f"{self.name} [{self.format}]" if self.format else self.name


@dataclass(frozen=True)
class Targets:
    runtimes: tuple[str, ...] = ("litert", "onnxruntime")
    threads: tuple[int | None, ...] = (None,)
    devices: tuple[str, ...] = ("cpu",)


@dataclass(frozen=True)
class BenchSpec:
    runs: int = 30
    warmup: int = 3
    memory: bool = True


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    output: Path
    models: tuple[ModelSpec, ...]
    variants: tuple[VariantSpec, ...]
    targets: Targets = field(default_factory=Targets)
    bench: BenchSpec = field(default_factory=BenchSpec)
    training: TrainingDefaults = field(default_factory=TrainingDefaults)
    trust_model: bool = False

    def model(self, name: str) -> ModelSpec:
        return next(m for m in self.models if m.name == name)

    def variant(self, key: str) -> VariantSpec:
        return next(v for v in self.variants if v.key == key)

    def select(self, models: tuple[str, ...] = (), variants: tuple[str, ...] = ()) -> Recipe:
        """Only the named models / variants (by name); an unknown name is an error."""
        from dataclasses import replace

        for wanted, have, kind in ((models, [m.name for m in self.models], "model"),
                                   (variants, [v.name for v in self.variants], "variant")):  # fmt: skip
            unknown = [w for w in wanted if w not in have]
            if unknown:
                raise UsageError(f"recipe {self.path.name} has no {kind} '{unknown[0]}'", f"choose from: {', '.join(dict.fromkeys(have))}")
        return replace(
            self,
            models=tuple(m for m in self.models if not models or m.name in models),
            variants=tuple(v for v in self.variants if not variants or v.name in variants),
        )


# --------------------------------------------------------------------------- parsing


class _At:
    """Where in the recipe we are, so every error names its place."""

    def __init__(self, path: Path, where: str = "") -> None:
        self.path, self.where = path, where

    def __truediv__(self, part: str | int) -> _At:
        step = f"[{part}]" if isinstance(part, int) else (f".{part}" if self.where else part)
        return _At(self.path, self.where + step)

    def error(self, message: str, hint: str | None = None) -> UsageError:
        place = f"{self.path.name}: {self.where}: " if self.where else f"{self.path.name}: "
        return UsageError(f"recipe {place}{message}", hint)

    def mapping(self, value: Any, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(f"expected a mapping, got {type(value).__name__}", f"keys: {', '.join(allowed)}")
        unknown = [k for k in value if k not in allowed]
        if unknown:
            raise self.error(f"unknown key '{unknown[0]}'", f"valid keys: {', '.join(allowed)}")
        missing = [k for k in required if k not in value]
        if missing:
            raise self.error(f"missing '{missing[0]}'", f"valid keys: {', '.join(allowed)}")
        return value

    def listing(self, value: Any) -> list[Any]:
        if isinstance(value, list | tuple):
            return list(value)
        return [value]


def load_recipe(path: str | Path) -> Recipe:
    """Read and fully validate a recipe; the only exception it raises is ``UsageError``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"recipe not found: {path}", "pass the path of a .yaml recipe (see recipes/)")
    try:
        raw = yaml.load(path.read_text(), Loader=recipe_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise UsageError(f"recipe {path.name} is not valid YAML{where}: {problem}", "fix the YAML syntax") from None
    return parse_recipe(raw, path)


def recipe_loader():
    """YAML's safe loader with YAML 1.2 numbers: ``structure: 2:4`` is the string "2:4" (2:4
    sparsity), not YAML 1.1's base-60 integer 124, and ``lr: 1e-3`` is a number, not a string."""
    import yaml

    class RecipeLoader(yaml.SafeLoader):
        pass

    numbers = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
    RecipeLoader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in numbers]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    integer = re.compile(r"^[-+]?(?:0|[1-9][0-9_]*|0x[0-9a-fA-F_]+|0o[0-7_]+|0b[01_]+)$")
    real = re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")
    RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:int", integer, list("-+0123456789"))
    RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:float", real, list("-+0123456789."))
    return RecipeLoader


def parse_recipe(raw: Any, path: Path) -> Recipe:
    at = _At(path)
    top = at.mapping(
        raw, ("name", "output", "data", "models", "variants", "targets", "bench", "training", "trust_model"),
        ("models", "variants"),
    )  # fmt: skip
    passes = PASSES
    base = path.parent
    default_data = _data_plan(top.get("data") or {}, at / "data", base)
    models = tuple(_model(m, at / "models" / i, base, default_data) for i, m in enumerate(at.listing(top["models"])))
    _unique([m.name for m in models], at / "models", "model")
    trust = bool(top.get("trust_model", False))
    training = _training(top.get("training") or {}, at / "training")
    variants: list[VariantSpec] = []
    for i, raw_variant in enumerate(at.listing(top["variants"])):
        variants += _variants(raw_variant, at / "variants" / i, passes, training)
    _unique([v.key for v in variants], at / "variants", "variant")
    targets = _targets(top.get("targets") or {}, at / "targets")
    bench = _bench(top.get("bench") or {}, at / "bench")
    output = Path(top.get("output") or f"{path.stem}-results")
    recipe = Recipe(
        name=str(top.get("name") or path.stem),
        path=path,
        output=output if output.is_absolute() else Path(os.path.normpath(base / output)),
        models=models,
        variants=tuple(variants),
        targets=targets,
        bench=bench,
        training=training,
        trust_model=trust,
    )
    _check_plan(recipe, at)
    return recipe


def _unique(names: list[str], at: _At, kind: str) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise at.error(f"two {kind}s are named '{name}'", f"give every {kind} its own name")
        seen.add(name)


def _int(value: Any, at: _At, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise at.error(f"expected a whole number ≥ {minimum}, got {value!r}")
    return value


def _data_spec(value: Any, at: _At, base: Path) -> DataSource | None:
    if value is None:
        return None
    if isinstance(value, str | Path):
        value = {"spec": str(value)}
    value = at.mapping(value, ("spec", "samples"), ("spec",))
    spec = str(value["spec"])
    samples = _int(value["samples"], at / "samples", minimum=1) if value.get("samples") is not None else None
    name = spec.partition(":")[0]
    if name not in EMBEDDED_DATA:
        file = Path(spec) if Path(spec).is_absolute() else base / spec
        if not file.exists():
            raise at.error(f"data not found: {file}", f"pass an image folder, a .npy/.npz file or one of: {', '.join(EMBEDDED_DATA)}")
        spec = str(file)
    return DataSource(spec, samples)


def _data_plan(value: Any, at: _At, base: Path, default: DataPlan | None = None) -> DataPlan:
    value = at.mapping(value, tuple(DATA_KEYS))
    specs = {role.value: _data_spec(value.get(key), at / key, base) for key, role in DATA_KEYS.items()}
    if default is not None:
        specs = {role: specs[role] or default.get(role) for role in specs}
    return DataPlan(**specs)


def _training(value: Any, at: _At) -> TrainingDefaults:
    value = at.mapping(value, ("epochs", "batch_size", "lr"))
    lr = value.get("lr")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0):
        raise (at / "lr").error(f"expected a positive number, got {lr!r}")
    return TrainingDefaults(
        epochs=_int(value["epochs"], at / "epochs", minimum=1) if value.get("epochs") is not None else None,
        batch_size=_int(value["batch_size"], at / "batch_size", minimum=1) if value.get("batch_size") is not None else None,
        lr=float(lr) if lr is not None else None,
    )


def _model(value: Any, at: _At, base: Path, default_data: DataPlan) -> ModelSpec:
    from edgecompress.models.zoo import ZOO

    if isinstance(value, str):
        value = {"zoo": value}
    value = at.mapping(value, ("name", "zoo", "params", "file", "train", "data", "trust_model", "latency_at"))
    latency_at = _int(value["latency_at"], at / "latency_at", minimum=1) if value.get("latency_at") is not None else None
    if ("zoo" in value) == ("file" in value):
        raise at.error("a model needs exactly one of 'zoo' (a zoo name) or 'file' (a model path)")
    data = _data_plan(value.get("data") or {}, at / "data", base, default_data)
    if "file" in value:
        if value.get("params") or value.get("train"):
            raise at.error("'params' and 'train' apply to zoo models only", "train the file's model before, or use zoo")
        file = Path(value["file"]) if Path(value["file"]).is_absolute() else base / value["file"]
        try:
            fmt = detect_format(file)
        except EdgeCompressError as exc:
            raise at.error(str(exc)) from None
        from edgecompress.artifacts import read_sidecar

        task = (read_sidecar(file).task if read_sidecar(file) else None) if fmt.is_keras else None
        return ModelSpec(str(value.get("name") or file.stem), file=file, data=data, task=task, latency_at=latency_at)
    try:
        entry = ZOO.get(str(value["zoo"]))
    except UsageError as exc:
        raise (at / "zoo").error(str(exc)) from None
    params = (at / "params").mapping(value.get("params") or {}, tuple(entry.defaults))
    # The zoo's embedded data for the model's task fills any role the recipe leaves open.
    embedded = DataSource(entry.embedded_data)
    data = DataPlan(**{role.value: data.get(role) or embedded for role in DATA_KEYS.values()})
    train_value = value.get("train")
    if train_value is None:
        raise at.error(
            "a zoo model needs 'train' (e.g. train: {epochs: 3}) so its metric means something",
            "or say train: false to benchmark random weights for size and latency only",
        )
    if train_value is not False and data.train is not None and data.train.samples is not None:
        raise (at / "data" / "train").error(
            "'samples' limits data for passes only; a zoo model trains on the whole set", "drop samples, or pass a smaller set"
        )
    train = None
    if train_value is not False:
        train_value = {} if train_value is True else train_value
        train_value = (at / "train").mapping(train_value, tuple(f.name for f in fields(TrainSpec)))
        try:
            train = TrainSpec(**train_value)
        except (UsageError, TypeError) as exc:
            raise (at / "train").error(str(exc)) from None
    return ModelSpec(str(value.get("name") or entry.name), zoo=entry.name, params=dict(params), train=train,
                     data=data, task=entry.task, latency_at=latency_at)  # fmt: skip


def parse_pass(value: Any, at: _At) -> PassSpec:
    """``export``, ``quantize(mode=int8)``, ``{quantize: {mode: int8}}`` → a PassSpec."""
    import yaml

    if isinstance(value, str):
        match = _CALL.match(value)
        if not match:
            raise at.error(f"cannot read pass '{value}'", "write name, name(key=value, ...) or {name: {key: value}}")
        name, args = match.group(1), (match.group(2) or "").strip()
        params: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in args.split(","))):
            key, sep, text = part.partition("=")
            if not sep:
                raise at.error(f"pass argument '{part}' is not key=value", f"e.g. {name}(mode=int8)")
            params[key.strip()] = yaml.load(text.strip(), Loader=recipe_loader())  # noqa: S506 - safe
        return PassSpec(name, params)
    if isinstance(value, dict) and len(value) == 1:
        name, params = next(iter(value.items()))
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise at.error(f"the parameters of pass '{name}' must be a mapping, got {params!r}")
        return PassSpec(str(name), dict(params))
    raise at.error(f"cannot read pass {value!r}", "write name, name(key=value, ...) or {name: {key: value}}")


def _variants(value: Any, at: _At, registry, training: TrainingDefaults) -> list[VariantSpec]:
    value = at.mapping(value, ("name", "passes", "formats"), ("name", "passes"))
    name = str(value["name"])
    specs = []
    for i, raw in enumerate(at.listing(value["passes"] or [])):
        spec = parse_pass(raw, at / "passes" / i)
        if spec.name not in registry:
            raise (at / "passes" / i).error(
                f"pass '{spec.name}' is not registered",
                f"registered passes: {', '.join(registry.names())}; a pass module registers itself in PASSES",
            )
        canonical = registry.canonical(spec.name)
        defaults = training.for_pass(pass_parameters(canonical), spec.params)
        specs.append(PassSpec(canonical, {**spec.params, **defaults}))
    formats = [str(f) for f in at.listing(value.get("formats") or [])]
    if not formats:
        variant = VariantSpec(name, tuple(specs))
        _instances(variant, at)
        return [variant]
    if not specs:
        raise (at / "formats").error("'formats' needs at least one pass whose 'format' it can set")
    out = []
    for fmt in formats:
        last = specs[-1]
        variant = VariantSpec(name, (*specs[:-1], PassSpec(last.name, {**last.params, "format": fmt})), fmt)
        _instances(variant, at / "formats")
        out.append(variant)
    return out


def _instances(variant: VariantSpec, at: _At) -> list[Any]:
    """Build each pass once, so a bad parameter fails now, with its place in the recipe."""
    out = []
    for i, spec in enumerate(variant.passes):
        where = at / "passes" / i
        try:
            out.append(spec.build())
        except EdgeCompressError as exc:
            raise where.error(f"pass '{spec.name}': {exc.message}", exc.hint) from None
        except TypeError as exc:
            valid = ", ".join(pass_parameters(spec.name)) or "none"
            raise where.error(f"pass '{spec.name}' does not take {spec.describe()}: {exc}", f"its parameters: {valid}") from None
        except ValueError as exc:
            raise where.error(f"pass '{spec.name}': {exc}") from None
    return out


def pass_parameters(name: str) -> list[str]:
    """A pass's parameter names, from its constructor (or the config dataclass it takes)."""
    from edgecompress.compress.passes import PASSES

    cls = PASSES.get(name)
    names: list[str] = []
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - hints are a nicety for the error message only
        hints = {}
    for param in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        hint = hints.get(param.name)
        config = next((a for a in typing.get_args(hint) or (hint,) if is_dataclass(a)), None)
        if config is not None:
            for item in fields(config):
                # a fine-tuning budget is given flat: epochs=…, batch_size=…, lr=…, seed=…
                budget = item.default_factory() if item.name == "finetune" and callable(item.default_factory) else None
                names += [f.name for f in fields(budget)] if is_dataclass(budget) else [item.name]
        elif param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            names.append(param.name)
    return list(dict.fromkeys(names))


def _targets(value: Any, at: _At) -> Targets:
    from edgecompress.runtimes import RUNTIMES
    from edgecompress.runtimes.base import DEVICES

    value = at.mapping(value, ("runtimes", "threads", "devices"))
    runtimes = []
    for name in at.listing(value.get("runtimes") or list(Targets.runtimes)):
        try:
            runtimes.append(RUNTIMES.canonical(str(name)))
        except UsageError as exc:
            raise (at / "runtimes").error(str(exc)) from None
    threads = tuple(None if t in (None, "default") else _int(t, at / "threads", 1) for t in at.listing(value.get("threads") or [None]))
    devices = tuple(str(d).lower() for d in at.listing(value.get("devices") or ["cpu"]))
    for device in devices:
        if device not in DEVICES:
            raise (at / "devices").error(f"unknown device '{device}'", f"choose from: {', '.join(DEVICES)}")
    return Targets(tuple(dict.fromkeys(runtimes)), tuple(dict.fromkeys(threads)), tuple(dict.fromkeys(devices)))


def _bench(value: Any, at: _At) -> BenchSpec:
    value = at.mapping(value, ("runs", "warmup", "memory"))
    return BenchSpec(
        runs=_int(value.get("runs", BenchSpec.runs), at / "runs", 1),
        warmup=_int(value.get("warmup", BenchSpec.warmup), at / "warmup", 0),
        memory=bool(value.get("memory", BenchSpec.memory)),
    )


def _check_plan(recipe: Recipe, at: _At) -> None:
    """Formats connect along every chain, data exists for the passes that need it, and some
    target runtime runs every variant's output."""
    from edgecompress.runtimes import RUNTIMES

    runtimes = [RUNTIMES.get(name) for name in recipe.targets.runtimes]
    for model in recipe.models:
        source = detect_format(model.file) if model.file else ModelFormat.KERAS_H5
        for variant in recipe.variants:
            where = at / "variants" / variant.key
            fmt = source
            for spec, step in zip(variant.passes, _instances(variant, where), strict=True):
                if fmt not in step.accepts:
                    accepted = ", ".join(f.value for f in step.accepts)
                    raise where.error(
                        f"pass '{spec.name}' takes {accepted} models, but gets {fmt.value} (model '{model.name}')",
                        "reorder the chain: training passes first, then export/quantize",
                    )
                for role in sorted(step.needs(), key=lambda r: r.value):
                    if model.data.get(role) is None:
                        key = next(k for k, r in DATA_KEYS.items() if r is role)
                        raise where.error(
                            f"pass '{spec.describe()}' needs {key} data, and model '{model.name}' has none",
                            f"add data: {{{key}: digits}} (or a folder/.npz) to the recipe or the model",
                        )
                fmt = step.produces
            if not any(fmt in rt.formats for rt in runtimes):
                raise where.error(
                    f"its output is {fmt.value}, which none of the target runtimes ({', '.join(recipe.targets.runtimes)}) runs",
                    "add a runtime that runs it to targets.runtimes, or change the variant",
                )
