"""dac: detection as code for Elastic Security and OpenSearch."""

__version__ = "0.1.0"
