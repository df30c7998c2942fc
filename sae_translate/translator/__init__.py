"""Unsupervised translation between a run's feature language and its text.

languages.py writes a run's windows in both languages, model.py is the x-transformers
encoder-decoder, losses.py and anchor.py the objectives and the word-by-word dictionary,
train.py the trainer, run.py training on a run and decoding its features.
"""
