"""The plots of a run folder that come from training itself: `results.png` and `labels.png`."""
