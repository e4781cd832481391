"""Where probe's models come from: torchvision, timm, Hugging Face configs, a file or a module.

    python -c "from bncli.studies.probe import models; print(models.build('torchvision:resnet18', []))"

Every model is built with its own default init, on the CPU, with torch's global generator seeded
by the run's seed: no weights are ever downloaded (torchvision's weights=None, timm's
pretrained=False, Hugging Face models from their config class). Each source's package is
optional and imported only when a model of it is asked for (torchvision takes 1.4 s to import,
timm 0.5 s, and timm imports torchvision); without it, or with one that does not import beside
this torch (PyPI's torchvision beside the CPU build of torch 2.13.0), the error is one line
with the install that works.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bncli.errors import BncliError, first_line, not_one_of

if TYPE_CHECKING:
    import torch

INSTALL = (
    "python3 -m venv .venv-vision && .venv-vision/bin/pip install -c constraints-vision.txt -e '.[dev,vision]' "
    "(torch 2.14.1 with torchvision 0.29.1, timm and transformers; make test-vision builds it)"
)
PACKAGES = {"torchvision": "torchvision", "timm": "timm", "hf": "transformers"}
SOURCES = {
    "torchvision": "torchvision:NAME, a torchvision.models builder (resnet50, vit_b_16, convnext_tiny), weights=None",
    "timm": "timm:NAME, a timm model (resnet50, nf_resnet50, vit_small_patch16_224), pretrained=False",
    "hf": "hf:MODEL_TYPE, a Hugging Face transformers model from its config class (gpt2, bert, llama)",
    "file": "path/to/file.py:function, a function in a Python file returning an nn.Module",
    "module": "package.module:function, the same from an importable module",
}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_FUNCTION = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass(frozen=True)
class Spec:
    """A MODEL argument, split: its source (torchvision, timm, hf, file, module) and its name
    (the model's, or the file or module), with the function for file and module."""

    source: str
    name: str
    function: str = ""

    def __str__(self) -> str:
        if self.source in ("file", "module"):
            return f"{self.name}:{self.function}"
        return f"{self.source}:{self.name}"


def parse(text: str) -> Spec:
    """A MODEL argument as a Spec; ValueError saying what the forms are."""
    head, sep, tail = str(text).rpartition(":")
    forms = "; ".join(SOURCES.values())
    if not sep or not head or not tail:
        raise ValueError(f"must be SOURCE:NAME, one of: {forms} (got {text!r})")
    if head in PACKAGES:
        if not _NAME.fullmatch(tail):
            raise ValueError(f"{tail!r} is not a model name (got {text!r})")
        return Spec(head, tail)
    if not _FUNCTION.fullmatch(tail):
        raise ValueError(f"{tail!r} is not a function name (got {text!r})")
    if head.endswith(".py") or "/" in head:
        return Spec("file", head, tail)
    if _MODULE.fullmatch(head):
        return Spec("module", head, tail)
    raise ValueError(f"must be SOURCE:NAME, one of: {forms} (got {text!r})")


def package(spec: Spec) -> Any:
    """The source's package, imported; BncliError in one line where it is missing or broken."""
    name = PACKAGES.get(spec.source)
    if name is None:
        return None
    if importlib.util.find_spec(name) is None:
        raise BncliError(f"MODEL: {spec} needs {name}, which is not installed; the tested set: {INSTALL}")
    try:
        return importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - a package that is there but cannot load: why, in one line
        import torch

        raise BncliError(
            f"MODEL: {spec} needs {name}, which is installed but does not import beside torch {torch.__version__} "
            f"({first_line(e)}); the tested set: {INSTALL}"
        ) from None


def _torchvision_names(tv: Any) -> list[str]:
    return list(tv.models.list_models(module=tv.models))


def check(spec: Spec) -> None:
    """Everything about MODEL that can be known before it is built: its package imports, its name
    is one the source has, its file or module and function exist. BncliError otherwise."""
    pkg = package(spec)
    if spec.source == "torchvision":
        names = _torchvision_names(pkg)
        if spec.name not in names:
            raise BncliError(f"MODEL: torchvision: {not_one_of(spec.name, names)}")
    elif spec.source == "timm":
        if not pkg.is_model(spec.name):
            raise BncliError(f"MODEL: timm: {not_one_of(spec.name, pkg.list_models())}")
    elif spec.source == "hf":
        known = list(pkg.CONFIG_MAPPING.keys())
        if spec.name not in known:
            raise BncliError(f"MODEL: hf: {not_one_of(spec.name, known)} (a transformers model_type)")
    else:
        _function(spec)


def _function(spec: Spec) -> Callable[..., Any]:
    """The function a file or module MODEL names (importing the file runs it, as python would)."""
    if spec.source == "file":
        path = Path(spec.name)
        if not path.is_file():
            raise BncliError(f"MODEL: {spec}: no file {path}")
        name = f"bncli_probe_{re.sub(r'[^A-Za-z0-9_]', '_', str(path.resolve()))}"
        module = sys.modules.get(name)
        if module is None:
            loaded = importlib.util.spec_from_file_location(name, path)
            assert loaded is not None and loaded.loader is not None  # a .py file always has one
            module = importlib.util.module_from_spec(loaded)
            try:
                loaded.loader.exec_module(module)
            except Exception as e:  # noqa: BLE001 - the user's file: its error, in one line
                raise BncliError(f"MODEL: {spec}: importing {path} failed: {first_line(e)}") from None
            sys.modules[name] = module
    else:
        try:
            module = importlib.import_module(spec.name)
        except ImportError as e:
            raise BncliError(f"MODEL: {spec}: cannot import {spec.name}: {first_line(e)}") from None
    fn = getattr(module, spec.function, None)
    if not callable(fn):
        raise BncliError(f"MODEL: {spec}: {spec.name} has no function {spec.function}")
    return fn


def model_args(items: list[str]) -> dict[str, Any]:
    """`--model-arg KEY=VALUE` items as keyword arguments, each value read as YAML reads it
    (48 an int, 0.1 a float, true, [3, 64, 64] a list, anything else text)."""
    from bncli import config

    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key.strip()] = config.loads(value, f"--model-arg {key.strip()}", repr(value))
    return out


def build(text: str, args: list[str]) -> torch.nn.Module:
    """The model MODEL names, with its own default init, on the CPU (the caller seeds torch's
    generator and moves it). BncliError, in one line, for what the source refuses."""
    import torch

    spec = parse(text)
    kwargs = model_args(args)
    pkg = package(spec)
    try:
        if spec.source == "torchvision":
            model = pkg.models.get_model(spec.name, weights=None, **kwargs)
        elif spec.source == "timm":
            model = pkg.create_model(spec.name, pretrained=False, **kwargs)
        elif spec.source == "hf":
            cfg = pkg.AutoConfig.for_model(spec.name, **kwargs)
            model = pkg.AutoModel.from_config(cfg)
        else:
            model = _function(spec)(**kwargs)
    except BncliError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as e:
        given = f" with {', '.join(args)}" if args else ""
        raise BncliError(f"MODEL: {spec}{given} could not be built: {first_line(e)}") from None
    if not isinstance(model, torch.nn.Module):
        raise BncliError(f"MODEL: {spec} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def default_input_shape(spec: Spec, model: torch.nn.Module) -> list[int] | None:
    """One sample's shape where the model says it: timm's pretrained_cfg input_size, a Hugging
    Face vision config's channels and image size, 3 x 224 x 224 for torchvision; else None."""
    if spec.source == "torchvision":
        return [3, 224, 224]
    if spec.source == "timm":
        cfg = getattr(model, "pretrained_cfg", None) or {}
        return list(cfg.get("input_size", (3, 224, 224)))
    config = getattr(model, "config", None)
    size = getattr(config, "image_size", None)
    if isinstance(size, int):
        return [int(getattr(config, "num_channels", 3)), size, size]
    return None


def main_input(model: torch.nn.Module) -> str | None:
    """The keyword a Hugging Face model's forward takes its input by (input_ids, pixel_values); None: positional."""
    name = getattr(model, "main_input_name", None)
    return name if isinstance(name, str) else None


def vocab_size(model: torch.nn.Module) -> int | None:
    """Token ids' range: the config's vocab_size, else the first embedding's size."""
    import torch

    size = getattr(getattr(model, "config", None), "vocab_size", None)
    if isinstance(size, int) and size > 0:
        return size
    embedding = next((m for m in model.modules() if isinstance(m, torch.nn.Embedding)), None)
    return None if embedding is None else int(embedding.num_embeddings)
