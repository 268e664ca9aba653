"""Regenerate reference_api_1.1.8.json: the public Python API of databricks-genai 1.1.8, read from its source.

    .venv/bin/python tests/api/reference_signatures.py                 # pip download the wheel into a temp dir
    .venv/bin/python tests/api/reference_signatures.py --wheel X.whl   # or read a wheel you have

The wheel is only read (unzipped and parsed with ``ast``), never installed or imported: its pins
(mlflow<=2.20.2, datasets<=3.2, databricks-sdk<0.43) conflict with tunedeck's. The JSON records, for
``databricks.model_training``: every public function of ``foundation_model`` (parameter names, kinds,
defaults, annotations), the public attributes and methods of the types a script meets (TrainingRun,
TrainingEvent, RunStatus, TrainingModelConstants, TrainingConstants, TrainConfig, ObjectList,
PaginatedObjectList), RunStatus's lifecycle order, the event types ``is_terminal_state()`` accepts,
the ``to_pandas()`` columns of each list, the exception classes and each package's ``__all__``.
tests/api/test_reference_api.py compares tunedeck against it.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VERSION = "1.1.8"
HERE = Path(__file__).resolve().parent
OUT = HERE / f"reference_api_{VERSION}.json"
PKG = "databricks/model_training"

CLASSES = {  # class -> the module (under PKG) that defines it
    "TrainingRun": "types/training_run.py",
    "TrainingEvent": "types/training_run.py",
    "RunStatus": "types/run_status.py",
    "TrainingModelConstants": "types/training_constants.py",
    "TrainingConstants": "types/training_constants.py",
    "TrainConfig": "types/train_config.py",
    "ObjectList": "types/common.py",
    "PaginatedObjectList": "api/engine/engine.py",
}


def _default(node: ast.expr | None, constants: dict[str, object]) -> object:
    if node is None:
        return {"required": True}
    if isinstance(node, ast.Name) and node.id in constants:
        return {"value": constants[node.id], "source": node.id}
    try:
        return {"value": ast.literal_eval(node)}
    except ValueError:
        return {"source": ast.unparse(node)}


def _signature(fn: ast.FunctionDef, constants: dict[str, object]) -> list[dict[str, object]]:
    a = fn.args
    positional = [*a.posonlyargs, *a.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    params = []
    for arg, default in zip(positional, defaults, strict=True):
        kind = "POSITIONAL_ONLY" if arg in a.posonlyargs else "POSITIONAL_OR_KEYWORD"
        params.append({"name": arg.arg, "kind": kind, "default": _default(default, constants),
                       "annotation": ast.unparse(arg.annotation) if arg.annotation else None})
    if a.vararg:
        params.append({"name": a.vararg.arg, "kind": "VAR_POSITIONAL"})
    for arg, default in zip(a.kwonlyargs, a.kw_defaults, strict=True):
        params.append({"name": arg.arg, "kind": "KEYWORD_ONLY", "default": _default(default, constants),
                       "annotation": ast.unparse(arg.annotation) if arg.annotation else None})
    if a.kwarg:
        params.append({"name": a.kwarg.arg, "kind": "VAR_KEYWORD"})
    return params


def _constants(tree: ast.Module) -> dict[str, object]:
    out: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def _all(tree: ast.Module) -> list[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    return []


def _decorators(fn: ast.FunctionDef) -> list[str]:
    return [ast.unparse(d) for d in fn.decorator_list]


def _class(cls: ast.ClassDef, constants: dict[str, object]) -> dict[str, object]:
    fields, methods, properties, members = [], {}, [], []
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and not node.target.id.startswith("_"):
            fields.append({"name": node.target.id, "annotation": ast.unparse(node.annotation),
                           "default": _default(node.value, constants)})
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name.isupper():  # an Enum member
                members.append(name)
        elif isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            decorators = _decorators(node)
            if "property" in decorators:
                properties.append(node.name)
            else:
                kind = next((d for d in ("classmethod", "staticmethod") if d in decorators), "method")
                methods[node.name] = {"kind": kind, "parameters": _signature(node, constants)}
    out: dict[str, object] = {"bases": [ast.unparse(b) for b in cls.bases], "fields": fields,
                              "properties": properties, "methods": methods}
    if members:
        out["members"] = members
    return out


def _find(tree: ast.Module, name: str, kind: type) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, kind) and getattr(node, "name", None) == name:
            return node
    raise LookupError(name)


def _display_columns(common: ast.Module) -> dict[str, list[str]]:
    """ObjectType._get_display_columns: the to_pandas() columns of each list type, in order."""
    fn = _find(common, "_get_display_columns", ast.FunctionDef)
    out: dict[str, list[str]] = {}
    for node in ast.walk(fn):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            kind = ast.unparse(node.test.comparators[0]).split(".")[-1]
            for inner in ast.walk(ast.Module(body=node.body, type_ignores=[])):
                if isinstance(inner, ast.Dict):
                    out[kind] = [ast.literal_eval(k) for k in inner.keys if k is not None]
                    break
    return out


def extract(wheel: Path) -> dict[str, object]:
    with zipfile.ZipFile(wheel) as zf:
        def tree(rel: str) -> ast.Module:
            return ast.parse(zf.read(f"{PKG}/{rel}").decode(), rel)

        fm_init = tree("api/foundation_model/__init__.py")
        functions = {}
        for name in _all(fm_init):
            mod = tree(f"api/foundation_model/{name}.py")
            fn = _find(mod, name, ast.FunctionDef)
            assert isinstance(fn, ast.FunctionDef)
            functions[name] = {"parameters": _signature(fn, _constants(mod)),
                               "returns": ast.unparse(fn.returns) if fn.returns else None}

        classes = {}
        for cls_name, rel in CLASSES.items():
            mod = tree(rel)
            node = _find(mod, cls_name, ast.ClassDef)
            assert isinstance(node, ast.ClassDef)
            classes[cls_name] = _class(node, _constants(mod))

        status_mod = tree("types/run_status.py")
        order_fn = _find(status_mod, "order", ast.FunctionDef)
        order = [ast.unparse(e).split(".")[-1] for n in ast.walk(order_fn) if isinstance(n, ast.List) for e in n.elts]

        run_mod = tree("types/training_run.py")
        terminal_fn = _find(run_mod, "is_terminal_state", ast.FunctionDef)
        terminal_events = [ast.literal_eval(e) for n in ast.walk(terminal_fn) if isinstance(n, ast.List) for e in n.elts]

        exc_mod = tree("api/exceptions.py")
        exceptions = {n.name: [ast.unparse(b) for b in n.bases] for n in exc_mod.body if isinstance(n, ast.ClassDef)}

        return {
            "package": "databricks-genai",
            "version": VERSION,
            "wheel": wheel.name,
            "wheel_sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
            "exports": {
                "databricks.model_training": _all(tree("__init__.py")),
                "databricks.model_training.types": _all(tree("types/__init__.py")),
                "databricks.model_training.api.foundation_model": _all(fm_init),
            },
            "functions": functions,
            "classes": classes,
            "run_status_order_latest_first": order,
            "terminal_event_types": terminal_events,
            "to_pandas_columns": _display_columns(tree("types/common.py")),
            "exceptions": exceptions,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", type=Path, help=f"a databricks_genai-{VERSION} wheel (default: pip download it)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel
        if wheel is None:
            subprocess.run([sys.executable, "-m", "pip", "download", f"databricks-genai=={VERSION}", "--no-deps",
                            "--only-binary", ":all:", "-d", tmp, "-q"], check=True)
            wheel = next(Path(tmp).glob("*.whl"))
        data = extract(wheel)
    args.out.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    print(f"wrote {args.out} from {data['wheel']} (sha256 {data['wheel_sha256'][:12]}...)")


if __name__ == "__main__":
    main()
