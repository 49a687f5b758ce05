"""Graph passes on the imported Relax module: BatchNorm folding, constant folding, layout, fusion, lowering."""
