"""Train the translator on small HMM languages; run plain or under torchrun (tests/test_distributed.py).

    python tests/ddp_translator.py OUT            # one process
    torchrun --nproc_per_node 2 tests/ddp_translator.py OUT

Every rank writes its final weights to OUT/MODE/rank-R.safetensors; rank 0 writes the held-out
accuracy to OUT/MODE/result.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from sae_translate.bench.hmm import HMMConfig, evaluate_translator, make_data
from sae_translate.distributed import Ranks
from sae_translate.translator.train import (
    Corpus,
    ParallelCorpus,
    Trainer,
    TranslatorConfig,
)

torch.set_num_threads(1)


def main(out: Path) -> None:
    data = make_data(
        HMMConfig(states=4, vocab_a=6, vocab_b=8, sharpness=6.0, length=12, seed=0), n_train=2000, n_test=300
    )
    ranks = Ranks.from_env()
    for mode, steps in (("aligned", 120), ("unsupervised", 20)):
        cfg = TranslatorConfig(
            mode=mode,
            steps=steps,
            batch_size=32,
            dim=32,
            heads=2,
            depth=1,
            decoder_depth=1,
            eval_every=steps,
            checkpoint_every=steps,
            progress=False,
        )
        pairs = ParallelCorpus(data.pairs_a, data.pairs_b) if mode == "aligned" else None
        trainer = Trainer(cfg, Corpus(data.train_a, 6), Corpus(data.train_b, 8), out / mode, pairs)
        trainer.fit()
        weights = {f"model.{k}": v for k, v in trainer.model.state_dict().items()}
        weights |= {f"disc.{k}": v for k, v in trainer.disc.state_dict().items()}
        save_file({k: v.contiguous() for k, v in weights.items()}, str(out / mode / f"rank-{ranks.rank}.safetensors"))
        if ranks.main:
            ab, ba = evaluate_translator(trainer.model.eval(), data)
            (out / mode / "result.json").write_text(json.dumps({"accuracy": (ab + ba) / 2}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
