"""Training: the loop (`trainer`), setting a run up (`setup`), the jobs around the loop (`hooks`), the loss
and its matchers, options and recipes, optimiser and schedule, EMA, distributed training, anchor fitting."""
