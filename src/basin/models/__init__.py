"""Models: the attractor network (and, later, CIFAR-10 backbones)."""

from basin.models.attractor import OUTPUT_ACTIVATIONS, AttractorNet, check_images
from basin.models.init import INITS, initialise
from basin.models.layer_stack import LayerStack

__all__ = ["INITS", "OUTPUT_ACTIVATIONS", "AttractorNet", "LayerStack", "check_images",
           "initialise"]
