"""The world's language model: a word-level tokenizer trained with `tokenizers` and a tiny
Pythia-architecture model (transformers' GPT-NeoX, rotary, parallel residual) trained on the
corpus, both saved as an ordinary Hugging Face checkpoint directory."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sae_translate.progress import progress as progress_bar
from sae_translate.world.config import EOT, PAD, SPECIAL_TOKENS, UNK


@dataclass
class LanguageModelConfig:
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_mlp: int | None = None  # None = 4 * d_model
    ctx: int = 64
    rotary_pct: float = 0.25  # Pythia's share of each head's dimensions that rotate
    steps: int = 600
    batch_size: int = 32  # windows per step
    lr: float = 3e-3
    warmup_fraction: float = 0.05
    weight_decay: float = 0.01
    seed: int = 0


def train_tokenizer(
    texts: Iterable[str],
    extra_words: Sequence[str] = (),
    *,
    lowercase: bool = False,
    split_punctuation: bool = False,
    max_vocab: int | None = None,
):
    """A WordLevel tokenizer over whitespace-separated words; `<|endoftext|>` is BOS and EOS.
    `extra_words` (e.g. every concept member) enter the vocabulary even if the corpus lacks them.

    For real text: `lowercase` folds case, `split_punctuation` makes every punctuation mark its
    own token, and `max_vocab` keeps the most frequent words (special tokens included); the
    rest read as `<unk>`."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
    if lowercase:
        tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if split_punctuation:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
        )
    # A WordPiece decoder without continuation pieces joins words with single spaces.
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    size = {} if max_vocab is None else {"vocab_size": max_vocab}
    trainer = trainers.WordLevelTrainer(
        special_tokens=list(SPECIAL_TOKENS), min_frequency=1, show_progress=False, **size
    )

    def corpus() -> Iterable[str]:
        yield from texts
        yield " ".join(extra_words)

    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=EOT,
        eos_token=EOT,
        unk_token=UNK,
        pad_token=PAD,
        clean_up_tokenization_spaces=False,
    )


def pack_token_windows(token_ids: Iterable[Sequence[int]], eos_id: int, ctx: int) -> np.ndarray:
    """Documents joined with EOS after each and cut into windows of `ctx` tokens (the packing
    `extract` and `train_sae` use, so the model sees its training distribution there)."""
    flat: list[int] = []
    for ids in token_ids:
        flat.extend(ids)
        flat.append(eos_id)
    n = len(flat) // ctx
    return np.asarray(flat[: n * ctx], dtype=np.int64).reshape(n, ctx)


def build_model(cfg: LanguageModelConfig, vocab_size: int, eos_id: int, pad_id: int):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    if cfg.d_model % cfg.n_heads:
        raise ValueError(f"d_model {cfg.d_model} is not divisible by n_heads {cfg.n_heads}")
    config = GPTNeoXConfig(  # type: ignore[call-arg]  # rotary_pct: kept as a config attribute
        vocab_size=vocab_size,
        hidden_size=cfg.d_model,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        intermediate_size=cfg.d_mlp or 4 * cfg.d_model,
        max_position_embeddings=cfg.ctx,
        rotary_pct=cfg.rotary_pct,
        hidden_act="gelu",
        use_parallel_residual=True,
        tie_word_embeddings=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    torch.manual_seed(cfg.seed)
    return GPTNeoXForCausalLM(config)


def train_language_model(
    model, windows: np.ndarray, cfg: LanguageModelConfig, progress: bool = True
) -> dict[str, float]:
    """Next-token training on shuffled windows (AdamW, warmup then cosine decay); the last 5%
    of windows are held out for a validation loss. Returns the final train and validation loss."""
    generator = torch.Generator().manual_seed(cfg.seed)
    data = torch.from_numpy(windows)
    n_val = max(1, len(data) // 20)
    train, val = data[:-n_val], data[-n_val:]
    if len(train) < cfg.batch_size:
        raise ValueError(f"corpus gives {len(train)} training windows, fewer than one batch of {cfg.batch_size}")
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    warmup = max(1, int(cfg.steps * cfg.warmup_fraction))

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, cfg.steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    model.train()
    order = torch.randperm(len(train), generator=generator)
    cursor, running = 0, float("nan")
    bar = progress_bar(range(cfg.steps), desc="Training world model", disable=not progress, leave=False)
    for _ in bar:
        if cursor + cfg.batch_size > len(order):
            order, cursor = torch.randperm(len(train), generator=generator), 0
        batch = train[order[cursor : cursor + cfg.batch_size]]
        cursor += cfg.batch_size
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        running = loss.item() if math.isnan(running) else 0.95 * running + 0.05 * loss.item()
        bar.set_postfix(loss=f"{running:.3f}")
    model.eval()
    with torch.no_grad():
        val_loss = float(np.mean([model(input_ids=b, labels=b).loss.item() for b in val.split(cfg.batch_size)]))
    return {"train_loss": running, "val_loss": val_loss}


def save_checkpoint(model, tokenizer, model_dir: Path) -> None:
    """`save_pretrained` for both, so AutoTokenizer / GPTNeoXForCausalLM / TransformerLens load it."""
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
