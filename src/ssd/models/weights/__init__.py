"""Weight files from elsewhere: torchvision SSD checkpoints and ImageNet backbones, read safely and mapped
onto our models by per-architecture key maps."""
