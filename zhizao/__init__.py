"""zhizao (智造): the composition root that wires edge, broker, cloud and analytics into one CLI."""

__version__ = "0.1.0"
