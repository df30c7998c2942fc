"""The extract stage: a model (TransformerLens) and an SAE (sae-lens) over a corpus into the HDF5 run store."""
