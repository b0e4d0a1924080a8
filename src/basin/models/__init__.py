"""Models: the attractor network (and, later, CIFAR-10 backbones)."""

from basin.models.attractor import OUTPUT_ACTIVATIONS, AttractorNet, check_images

__all__ = ["OUTPUT_ACTIVATIONS", "AttractorNet", "check_images"]
