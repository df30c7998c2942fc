"""The embedded toy world: a planted-concept corpus, a tiny GPT-NeoX model trained on it and an
SAE trained on its residual stream, with the ground-truth concepts of every token."""

from sae_translate.world.config import Concept, WorldConfig, load_world_config
from sae_translate.world.corpus import Document, generate_documents, tag_words

__all__ = [
    "Concept",
    "Document",
    "WorldConfig",
    "generate_documents",
    "load_world_config",
    "tag_words",
]
