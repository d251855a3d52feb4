"""One file per backbone; importing a file registers its architectures and their weight key maps."""

from ssd.models.backbones import mobilenetv3, mobilenetv3_small, resnet, vgg  # noqa: F401
