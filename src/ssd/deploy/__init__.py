"""Deployment: BatchNorm folding, exportable graphs, export formats and their predictors, comparison of
runtimes, and the inference benchmark."""
