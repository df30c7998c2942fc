"""A Hugging Face hub cache filled from a toy world, so hub code paths run offline.

With HF_HUB_OFFLINE=1 and HF_HUB_CACHE pointing here, `HookedTransformer.from_pretrained
("pythia-70m-deduped")`, sae-lens's registry release `pythia-70m-deduped-res-sm` and a sparsify
repo resolve through their real download code to these files.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from safetensors.torch import save_file

MODEL_REPO = "EleutherAI/pythia-70m-deduped"
REGISTRY_REPO = "ctigges/pythia-70m-deduped__res-sm_processed"
SPARSIFY_REPO = "EleutherAI/sae-pythia-70m-deduped-test"
COMMIT = "0" * 40


def _snapshot(cache: Path, repo: str) -> Path:
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    snap = root / "snapshots" / COMMIT
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def build_hub_cache(cache: Path, model_dir: Path, sae_dir: Path, hook: str) -> dict[str, str]:
    """Fill `cache` and return the specs that now resolve offline."""
    layer = int(re.match(r"blocks\.(\d+)\.", hook).group(1))
    for f in model_dir.iterdir():
        if f.is_file():
            shutil.copy(f, _snapshot(cache, MODEL_REPO) / f.name)

    # sae-lens registry layout: <folder>/cfg.json + sae_weights.safetensors
    folder = _snapshot(cache, REGISTRY_REPO) / f"{layer}-res-sm"
    folder.mkdir(exist_ok=True)
    for name in ("cfg.json", "sae_weights.safetensors"):
        shutil.copy(sae_dir / name, folder / name)

    # sparsify layout: layers.N/cfg.json + sae.safetensors (a TopK SAE from the same weights)
    from safetensors.torch import load_file

    weights = load_file(str(sae_dir / "sae_weights.safetensors"))
    cfg = json.loads((sae_dir / "cfg.json").read_text())
    sparse_dir = _snapshot(cache, SPARSIFY_REPO) / f"layers.{layer}"
    sparse_dir.mkdir(exist_ok=True)
    save_file(
        {
            "encoder.weight": weights["W_enc"].T.contiguous(),
            "encoder.bias": weights["b_enc"].contiguous(),
            "W_dec": weights["W_dec"].T.contiguous(),  # the layout sae-lens's sparsify loader reads
            "b_dec": weights["b_dec"].contiguous(),
        },
        str(sparse_dir / "sae.safetensors"),
    )
    (sparse_dir / "cfg.json").write_text(json.dumps({"d_in": cfg["d_in"], "num_latents": cfg["d_sae"], "k": 8}))
    return {
        "model": "pythia-70m-deduped",
        "registry_sae": f"pythia-70m-deduped-res-sm/{hook}",
        "sparsify_sae": f"sparsify:{SPARSIFY_REPO}/layers.{layer}",
    }


def offline_env(cache: Path) -> dict[str, str]:
    return {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
