"""Vision: encoders (NatureCNN, IMPALA ResNet, ResNet-18, ViT), encoder files, augmentation."""

from rlkit.vision.encoders import MLP, Encoder, NatureCNN, SmallNatureCNN, default_encoder, make_encoder
from rlkit.vision.vit import ViT

__all__ = ["MLP", "Encoder", "NatureCNN", "SmallNatureCNN", "ViT", "default_encoder", "make_encoder"]
