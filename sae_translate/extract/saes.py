"""SAE specs and loading through sae-lens.

A spec is one of
  - a local directory: sae-lens format (cfg.json + sae_weights.safetensors) or sparsify format
    (cfg.json + sae.safetensors);
  - `sparsify:HF_REPO/LAYER`, e.g. `sparsify:EleutherAI/sae-pythia-160m-32k/layers.6`;
  - `RELEASE/SAE_ID` from sae-lens's registry, e.g. `pythia-70m-deduped-res-sm/blocks.3.hook_resid_post`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from sae_translate.devices import resolve_device
from sae_translate.errors import UserError
from sae_translate.extract.models import _first_line


@dataclass(frozen=True)
class SaeSpec:
    kind: str  # "local" | "sparsify" | "registry"
    source: str  # directory, HF repo, or registry release
    sae_id: str = ""  # layer folder or registry SAE id

    def __str__(self) -> str:
        if self.kind == "local":
            return self.source
        if self.kind == "sparsify":
            return f"sparsify:{self.source}/{self.sae_id}"
        return f"{self.source}/{self.sae_id}"


def parse_sae_spec(spec: str) -> SaeSpec:
    if Path(spec).exists():
        if not (Path(spec) / "cfg.json").is_file():
            raise UserError(f"SAE directory {spec!r} has no cfg.json; pass a directory saved by sae-lens or sparsify")
        return SaeSpec("local", spec)
    if spec.startswith("sparsify:"):
        rest = spec.removeprefix("sparsify:")
        repo, _, layer = rest.rpartition("/")
        if not repo or "/" not in repo or not layer:
            raise UserError(
                f"bad sparsify spec {spec!r}: use sparsify:OWNER/REPO/LAYER, "
                "e.g. sparsify:EleutherAI/sae-pythia-160m-32k/layers.6"
            )
        return SaeSpec("sparsify", repo, layer)
    if spec.startswith(("/", "./", "../", "~")):
        raise UserError(f"no SAE directory at {spec!r}")
    release, _, sae_id = spec.partition("/")
    if not sae_id:
        raise UserError(f"SAE {spec!r} is neither a directory nor RELEASE/SAE_ID nor sparsify:REPO/LAYER")
    return SaeSpec("registry", release, sae_id)


def load_sae(spec: str, device: str = "auto"):
    """An sae_lens SAE (float32, eval mode) from a spec string."""
    from sae_lens import SAE
    from sae_lens.loading.pretrained_sae_loaders import (
        sparsify_disk_loader,
        sparsify_huggingface_loader,
    )

    parsed = parse_sae_spec(spec)
    device = resolve_device(device)
    try:
        warnings.filterwarnings("ignore", message="(?s).*model_from_pretrained_kwargs")  # handled by model_kwargs_for
        if parsed.kind == "local":
            sparsify_format = (Path(parsed.source) / "sae.safetensors").is_file()
            converter = {"converter": sparsify_disk_loader} if sparsify_format else {}
            sae = SAE.load_from_disk(parsed.source, device=device, dtype="float32", **converter)
        elif parsed.kind == "sparsify":
            sae = SAE.from_pretrained(
                parsed.source, parsed.sae_id, device=device, dtype="float32", converter=sparsify_huggingface_loader
            )
        else:
            _check_registry(parsed)
            sae = SAE.from_pretrained(parsed.source, parsed.sae_id, device=device, dtype="float32")
    except UserError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise UserError(f"could not load SAE {spec!r}: {_first_line(e)}") from e
    sae.eval()
    return sae


def _check_registry(spec: SaeSpec) -> None:
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    if spec.source not in directory:
        raise UserError(
            f"unknown SAE release {spec.source!r} (and no directory {str(spec)!r} exists): use a sae-lens "
            "registry release, sparsify:REPO/LAYER, or a local directory"
        )
    ids = list(directory[spec.source].saes_map)
    if spec.sae_id not in ids:
        shown = ", ".join(ids[:6]) + (", ..." if len(ids) > 6 else "")
        raise UserError(f"release {spec.source!r} has no SAE {spec.sae_id!r}; it has: {shown}")


def model_kwargs_for(sae) -> dict:
    """The TransformerLens loading options the SAE was trained under (e.g. center_writing_weights=False)."""
    return dict(getattr(sae.cfg.metadata, "model_from_pretrained_kwargs", None) or {})


def sae_hook_name(sae) -> str:
    return sae.cfg.metadata.hook_name


def check_sae_fits_model(sae, model, hook: str | None) -> str:
    """The hook to read, after checking that it exists and that the SAE's width matches it."""
    sae_hook = sae_hook_name(sae)
    hook = hook or sae_hook
    if hook not in model.hook_dict:
        raise UserError(f"model has no hook {hook!r}; hooks look like blocks.3.hook_resid_post")
    if sae_hook and hook != sae_hook:
        raise UserError(
            f"--hook {hook} does not match the SAE's own hook {sae_hook}; drop --hook or pick the matching SAE"
        )
    d_model = model.cfg.d_model
    if "resid" in hook and sae.cfg.d_in != d_model:
        raise UserError(f"SAE input width {sae.cfg.d_in} does not match the model's d_model {d_model} at {hook}")
    return hook
