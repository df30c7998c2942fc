"""Extract throughput against the bare compute it cannot avoid, and peak memory at two token counts.

    python benchmarks/extract_bench.py --world stores/world                 # the demo model, CPU
    python benchmarks/extract_bench.py --pythia-160m-shape --device cuda    # random weights, 32k SAE

"Bare" is the model forward stopped at the hook's layer plus the SAE encode, on the same batches
of the same token windows; extract adds tokenization, sparsification, the chunk writer, the HDF5
file and the logit lens. The overhead ratio is extract time (model and SAE loading excluded, timed
inside the same call) / bare time. On a shared machine the two drift together, so bare and extract
alternate (`--repeat` pairs, each extract against the mean of the bare runs either side of it) and
the median ratio is reported.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sae_translate.extract.models as models_module  # noqa: E402
import sae_translate.extract.saes as saes_module  # noqa: E402
from sae_translate.devices import resolve_device  # noqa: E402
from sae_translate.extract.corpus import iter_documents, pack_windows  # noqa: E402
from sae_translate.extract.extract import (  # noqa: E402
    ExtractConfig,
    extract,
    hook_layer,
    logit_lens,
    token_strings,
)
from sae_translate.extract.models import load_model  # noqa: E402
from sae_translate.extract.saes import load_sae, model_kwargs_for  # noqa: E402


def pythia_160m_shape(root: Path, d_sae: int = 32768) -> tuple[str, str, str]:
    """A random-weight model of pythia-160m's shape (with a tiny word-level tokenizer) and a random k=32 TopK SAE."""
    from sae_lens import TopKSAE, TopKSAEConfig
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(5000)]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator([" ".join(words)], trainers.WordLevelTrainer(special_tokens=["<|endoftext|>", "<unk>"]))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<unk>"
    )
    cfg = GPTNeoXConfig(
        vocab_size=50304,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=2048,
        rotary_pct=0.25,
    )
    torch.manual_seed(0)
    GPTNeoXForCausalLM(cfg).save_pretrained(root / "model")
    fast.save_pretrained(root / "model")
    # TopK like EleutherAI's pythia-160m SAEs: a random ReLU SAE would fire half its features.
    sae_cfg = TopKSAEConfig(d_in=768, d_sae=d_sae, k=32, dtype="float32", device="cpu")
    sae_cfg.metadata.hook_name = "blocks.6.hook_resid_post"
    TopKSAE(sae_cfg).save_model(str(root / "sae"))
    rng = torch.Generator().manual_seed(0)
    lines = [" ".join(words[i] for i in torch.randint(0, 5000, (200,), generator=rng).tolist()) for _ in range(20000)]
    (root / "corpus.txt").write_text("\n".join(lines) + "\n")
    return str(root / "model"), str(root / "sae"), str(root / "corpus.txt")


def _loaded(cfg: ExtractConfig):
    """Model, SAE, hook and the token windows, loaded once for every bare run."""
    return _load(cfg.model, cfg.sae, cfg.dataset, cfg.hook, cfg.ctx, cfg.tokens, cfg.device)


@functools.cache
def _load(model_dir: str, sae_dir: str, dataset: str, hook: str | None, ctx: int, n_tokens: int, device: str):
    sae = load_sae(sae_dir, device=device)
    model = load_model(model_dir, device=device, processing=model_kwargs_for(sae))
    hook = hook or sae.cfg.metadata.hook_name
    windows = pack_windows(iter_documents(dataset), model.tokenizer, ctx)
    tokens = torch.as_tensor(np.stack(list(islice(windows, n_tokens // ctx))), dtype=torch.long)
    return model, sae, hook, tokens


@torch.no_grad()
def bare_seconds(cfg: ExtractConfig) -> tuple[float, float]:
    """Wall and CPU seconds of the forward passes (stopped at the hook's layer) and the SAE encode."""
    model, sae, hook, tokens = _loaded(cfg)
    layer = hook_layer(hook)
    sync = torch.cuda.synchronize if str(model.cfg.device).startswith("cuda") else (lambda: None)
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    for s in range(0, len(tokens), cfg.batch_size):
        batch = tokens[s : s + cfg.batch_size].to(model.cfg.device)
        _, cache = model.run_with_cache(batch, names_filter=[hook], stop_at_layer=None if layer is None else layer + 1)
        sae.encode(cache[hook])
    sync()
    return time.perf_counter() - t0, time.process_time() - c0


@torch.no_grad()
def fixed_seconds(cfg: ExtractConfig) -> float:
    """One-off work whatever the token count, timed alone: logit lens of every feature and the
    vocabulary strings (extract does both once, beside the forward passes)."""
    model, sae, _, _ = _loaded(cfg)
    t0 = time.perf_counter()
    logit_lens(model, sae, cfg.logit_lens_k)
    token_strings(model.tokenizer, model.cfg.d_vocab)
    return time.perf_counter() - t0


def extract_seconds(cfg: ExtractConfig):
    """Wall and CPU seconds (every thread) of one extract, less what its model and SAE loading took."""
    loading = [0.0, 0.0]

    def timed(load):
        def run(*args, **kwargs):
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return load(*args, **kwargs)
            finally:
                loading[0] += time.perf_counter() - t0
                loading[1] += time.process_time() - c0

        return run

    originals = models_module.load_model, saes_module.load_sae
    models_module.load_model, saes_module.load_sae = timed(originals[0]), timed(originals[1])
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        result = extract(cfg)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        models_module.load_model, saes_module.load_sae = originals
    shutil.rmtree(cfg.out)
    return wall - loading[0], cpu - loading[1], result


def peak_rss_mib(args: argparse.Namespace, model: str, sae: str, dataset: str, tokens: int) -> float:
    """Peak resident memory of a whole `sae-translate extract` in a fresh process."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            sys.executable,
            "-m",
            "sae_translate",
            "extract",
            "--model",
            model,
            "--sae",
            sae,
            "--dataset",
            dataset,
            "--out",
            out,
            "--tokens",
            str(tokens),
            "--ctx",
            str(args.ctx),
            "--batch-size",
            str(args.batch_size),
            "--device",
            args.device,
        ]
        # A fresh wrapper process per measurement: RUSAGE_CHILDREN is a running maximum.
        probe = (
            "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
        )
        out_kib = subprocess.run([sys.executable, "-c", probe, *cmd], check=True, capture_output=True, text=True).stdout
        return int(out_kib.strip()) / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", default="stores/world", help="toy world dir (model/, sae/, corpus/)")
    p.add_argument("--pythia-160m-shape", action="store_true", help="random pythia-160m-shaped model + 32k SAE")
    p.add_argument("--tokens", type=int, default=200_000)
    p.add_argument("--ctx", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--memory", action="store_true", help="also measure peak RSS at tokens and 4x tokens")
    p.add_argument("--repeat", type=int, default=3, help="bare / extract pairs (median ratio reported)")
    args = p.parse_args()
    args.device = resolve_device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        if args.pythia_160m_shape:
            model, sae, dataset = pythia_160m_shape(Path(tmp))
        else:
            world = Path(args.world)
            model, sae = str(world / "model"), str(world / "sae")
            dataset = str(sorted((world / "corpus").glob("*.txt"))[0])
        cfg = ExtractConfig(
            model=model,
            sae=sae,
            dataset=dataset,
            out=str(Path(tmp) / "run"),
            tokens=args.tokens,
            ctx=args.ctx,
            batch_size=args.batch_size,
            device=args.device,
            progress=False,
            chunk_seqs=max(256, args.batch_size * 4),
        )
        bare_seconds(cfg)  # warm-up: caches, kernels, allocator
        fixed = fixed_seconds(cfg)
        bares, works = [bare_seconds(cfg)], []
        for _ in range(args.repeat):
            wall, cpu, result = extract_seconds(cfg)
            works.append((wall, cpu))
            bares.append(bare_seconds(cfg))

        def ratios(i: int) -> list[float]:  # each extract against the mean of the bare runs either side
            return [w[i] / ((b0[i] + b1[i]) / 2) for w, b0, b1 in zip(works, bares, bares[1:])]

        bare, work = statistics.median(b[0] for b in bares), statistics.median(w[0] for w in works)
        row = {
            "model": "pythia-160m shape (random)" if args.pythia_160m_shape else "demo world",
            "device": args.device,
            "tokens": result.n_tokens,
            "ctx": args.ctx,
            "batch_size": args.batch_size,
            "bare_s": [round(b[0], 3) for b in bares],
            "extract_s": [round(w[0], 3) for w in works],
            "overhead_ratio": round(statistics.median(ratios(0)), 3),
            "ratios": [round(r, 3) for r in ratios(0)],
            "cpu_ratio": round(statistics.median(ratios(1)), 3),
            "cpu_ratios": [round(r, 3) for r in ratios(1)],
            "fixed_s": round(fixed, 3),
            "bare_tok_s": round(result.n_tokens / bare),
            "extract_tok_s": round(result.n_tokens / work),
            "torch_threads": torch.get_num_threads(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }
        if args.memory:
            row["peak_rss_mib"] = {
                n: round(peak_rss_mib(args, model, sae, dataset, n), 1) for n in (args.tokens, 4 * args.tokens)
            }
    print(json.dumps(row))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
