"""Model-free tensor math used by training, evaluation and deployment: boxes, default boxes, NMS."""
