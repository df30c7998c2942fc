"""Model loading: a TransformerLens model name or a local Hugging Face checkpoint directory.

Both go through TransformerLens's own config and weight conversion, so a local GPT-NeoX
checkpoint is loaded exactly as `pythia-160m` would be once its files are on disk.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from sae_translate.devices import resolve_device
from sae_translate.errors import UserError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@contextlib.contextmanager
def hooked_transformer_api() -> Iterator[None]:
    """Construct HookedTransformers without TransformerLens 3's deprecation warning on every run.

    TransformerLens 3 deprecates HookedTransformer for TransformerBridge, but sae-lens, which trains
    and loads our SAEs and runs its trainer on a HookedTransformer, still builds on HookedTransformer
    and does not import under TransformerLens 4 (SAELens issue #738). So we stay on the
    HookedTransformer API, pin TransformerLens below 4 in pyproject.toml, and hide only this warning.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"HookedTransformer(\.\w+)? is deprecated", category=DeprecationWarning
        )
        yield


def resolve_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def is_local_checkpoint(spec: str) -> bool:
    return (Path(spec) / "config.json").is_file()


def load_tokenizer(spec: str):
    """The tokenizer of a model spec (hub name or local checkpoint directory)."""
    from transformers import AutoTokenizer

    if is_local_checkpoint(spec):
        return AutoTokenizer.from_pretrained(spec)
    from transformer_lens import loading_from_pretrained as loading

    try:
        return AutoTokenizer.from_pretrained(loading.get_official_model_name(spec))
    except ValueError as e:
        raise UserError(
            f"unknown model {spec!r}: not a TransformerLens model name nor a local checkpoint directory"
        ) from e


# TransformerLens's weight processing; an SAE must see the residual stream it was trained on,
# so callers pass the SAE's own `model_from_pretrained_kwargs` (see saes.model_kwargs_for).
PROCESSING_DEFAULTS = {
    "fold_ln": True,
    "center_writing_weights": True,
    "center_unembed": True,
    "fold_value_biases": True,
}


def load_model(spec: str, device: str = "auto", dtype: str = "float32", processing: dict | None = None):
    """A HookedTransformer from a TransformerLens model name or a local checkpoint directory."""
    from transformer_lens import HookedTransformer
    from transformer_lens import loading_from_pretrained as loading

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    quiet = contextlib.redirect_stdout(io.StringIO())  # TransformerLens prints on every load
    options = {**PROCESSING_DEFAULTS, **{k: v for k, v in (processing or {}).items() if k in PROCESSING_DEFAULTS}}
    if is_local_checkpoint(spec):
        return _load_local_checkpoint(spec, device, torch_dtype, options)
    if Path(spec).exists():
        raise UserError(f"{spec!r} is a path but has no config.json; pass a Hugging Face checkpoint directory")
    try:
        loading.get_official_model_name(spec)
    except ValueError as e:
        raise UserError(
            f"unknown model {spec!r}: use a TransformerLens model name (e.g. pythia-160m) "
            "or a local checkpoint directory"
        ) from e
    try:
        with quiet, hooked_transformer_api():
            model = HookedTransformer.from_pretrained(spec, device=device, dtype=torch_dtype, **options)
    except OSError as e:
        raise UserError(
            f"could not load model {spec!r} ({_first_line(e)}); check the network or the Hugging Face cache"
        ) from e
    model.eval()
    return model


def _load_local_checkpoint(path: str, device: str, dtype: torch.dtype, options: dict):
    """TransformerLens's from_pretrained, minus its insistence on an official model name."""
    from transformer_lens import HookedTransformer
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise UserError(f"could not load checkpoint {path!r}: {_first_line(e)}") from e
    logging.getLogger("root").setLevel(logging.WARNING)
    cfg = loading.get_pretrained_model_config(
        path, hf_cfg=hf_model.config.to_dict(), fold_ln=options["fold_ln"], device=device, dtype=dtype
    )
    state_dict = loading.get_pretrained_state_dict(path, cfg, hf_model, dtype=dtype)
    with hooked_transformer_api():
        model = HookedTransformer(cfg, tokenizer, move_to_device=False)
    model.load_and_process_state_dict(state_dict, **options)
    model.move_model_modules_to_device()
    model.eval()
    return model


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def hook_layer(hook: str) -> int | None:
    """The block a hook sits in (``blocks.3.hook_resid_post`` -> 3), None outside the blocks."""
    m = re.match(r"blocks\.(\d+)\.", hook)
    return int(m.group(1)) if m else None


@torch.no_grad()
def hook_width(model, hook: str) -> int:
    """The width of a hook's activations, from one tiny forward pass that stops after its block."""
    layer = hook_layer(hook)
    probe = torch.zeros((1, 2), dtype=torch.long, device=model.cfg.device)
    _, cache = model.run_with_cache(probe, names_filter=[hook], stop_at_layer=layer + 1 if layer is not None else None)
    act = cache[hook]
    if act.ndim != 3:
        raise UserError(f"hook {hook!r} is not a [batch, pos, d] activation; pick a residual-stream or MLP-out hook")
    return int(act.shape[-1])
